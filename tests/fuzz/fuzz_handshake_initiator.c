/*
 * fuzz_handshake_initiator.c - the initiator side of the distribution
 * handshake, after a valid start (our send_name): the input is the acceptor
 * (status, challenge, challenge ack). See fuzz_handshake.h for the input
 * layout.
 */
#include "fuzz_handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hs_run(AEMP__HS_INITIATOR, data, size);
    return 0;
}
