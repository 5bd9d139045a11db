# Helpers for the programs built beside the library (bench, interop and
# fault test programs) and the Erlang modules the tests load.

# aemp_c_program(TARGET SOURCE OUTPUT_NAME): a C program on the static
# library, warnings as errors.
function(aemp_c_program target source output_name)
  add_executable(${target} ${source})
  set_target_properties(${target} PROPERTIES OUTPUT_NAME ${output_name})
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Werror)
  target_link_libraries(${target} PRIVATE aemp_static)
endfunction()

# aemp_erlc(TARGET ERLC SOURCE EBIN): compile the Erlang module SOURCE into
# EBIN with ERLC (warnings as errors), as target TARGET built by default.
function(aemp_erlc target erlc source ebin)
  get_filename_component(module ${source} NAME_WE)
  add_custom_command(
    OUTPUT ${ebin}/${module}.beam
    COMMAND ${CMAKE_COMMAND} -E make_directory ${ebin}
    COMMAND ${erlc} -Wall -Werror -o ${ebin} ${source}
    DEPENDS ${source}
    COMMENT "erlc ${module}.erl"
    VERBATIM)
  add_custom_target(${target} ALL DEPENDS ${ebin}/${module}.beam)
endfunction()
