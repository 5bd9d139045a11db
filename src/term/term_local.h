/*
 * term_local.h - helpers shared by the files of the term layer only.
 */
#ifndef AEMP_TERM_LOCAL_H
#define AEMP_TERM_LOCAL_H

#include "../aemp_impl.h"

#include <ei.h>
#include <locale.h>

/* Tags ei.h does not name: we only need them to refuse them. */
#define AEMP__TAG_COMPRESSED 80     /* zlib-compressed term */
#define AEMP__TAG_ATOM_CACHE_REF 82 /* index into the distribution atom cache */
#define AEMP__TAG_LOCAL 121         /* LOCAL_EXT: opaque, only the sender can read it */

/*
 * The "C" locale for number text: Erlang's float syntax always uses '.',
 * whatever locale the embedding program chose with setlocale(). Returns
 * (locale_t)0 if it could not be created; callers then fall back to the
 * current locale.
 */
locale_t aemp__term_c_locale(void);

/* strtod in the "C" locale. */
double aemp__term_strtod(const char *s, char **end);

/* Parse the 31-byte text of an old FLOAT_EXT; -1 unless it is a number
 * followed by NULs, the only form ei's decoder reads consistently. */
int aemp__term_old_float(const char *text31, double *out);

/*
 * Erlang float text for d (shortest that reads back as d, always with a '.'
 * as Erlang's syntax needs) into out; returns its length (< size), or
 * truncates as snprintf does.
 */
int aemp__term_fmt_double(char *out, size_t size, double d);

/* Copy an atom's text as UTF-8 (latin-1 converted) into out (NUL-terminated).
 * AEMP_ETOOBIG if it does not fit in size bytes. */
int aemp__term_atom_utf8(const char *s, size_t n, int latin1, char *out, size_t size);

/* 1 if s[0..n) is a reserved word of Erlang (`end`, `fun`, `div`...): an
 * atom that must be quoted. */
int aemp__term_reserved_word(const char *s, size_t n);

#endif /* AEMP_TERM_LOCAL_H */
