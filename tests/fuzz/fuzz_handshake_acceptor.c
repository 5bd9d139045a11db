/*
 * fuzz_handshake_acceptor.c - the acceptor side of the distribution
 * handshake: the input is the initiator (send_name, challenge reply). See
 * fuzz_handshake.h for the input layout.
 */
#include "fuzz_handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hs_run(AEMP__HS_ACCEPTOR, data, size);
    return 0;
}
