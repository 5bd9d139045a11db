/*
 * fuzz_parse.c - aemp_term_parse on arbitrary text. A failure reports a
 * position inside the text and leaves the buffer as it was; a success
 * appends exactly one well-formed term (aemp__term_validate and ei's own
 * ei_skip_term agree on its size, on a copy that ends at an inaccessible
 * page), which prints, and whose printed text reads back to the same bytes
 * (unless the print was cut short or holds a reference, which
 * aemp_term_print writes without its creation).
 */
#include "fuzz_common.h"

#include <ei.h>

static char printed[1 << 16];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        fuzz_quiet_logs();
        init = 1;
    }
    /* something before the term: parse appends, and leaves it on error */
    aemp_buf b = AEMP_BUF_INIT;
    FUZZ_CHECK(aemp_term_format(&b, "prefix") == 0);
    size_t before = b.len, pos = SIZE_MAX;
    int rc = aemp_term_parse(&b, (const char *)data, size, &pos);
    if (rc) {
        FUZZ_CHECK(rc == AEMP_EINVAL || rc == AEMP_ETOOBIG || rc == AEMP_ENOMEM);
        FUZZ_CHECK(pos <= size);
        FUZZ_CHECK(b.len == before);
        aemp_buf_free(&b);
        return 0;
    }
    size_t len = b.len - before, used = 0;
    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(aemp__term_validate(b.data + before, len, &used) == 0 && used == len);
    const char *copy = fuzz_guarded_copy(b.data + before, len);
    if (copy) {
        int i = 0;
        FUZZ_CHECK(ei_skip_term(copy, &i) == 0 && (size_t)i == len);
    }
    aemp_term t = {b.data + before, len};
    int n = aemp_term_print(&t, printed, sizeof printed);
    FUZZ_CHECK(n >= 0 && (size_t)n < sizeof printed);
    if ((size_t)n < sizeof printed - 1 && !strstr(printed, "#Ref<")) {
        aemp_buf again = AEMP_BUF_INIT;
        rc = aemp_term_parse(&again, printed, (size_t)n, &pos);
        if (rc) fprintf(stderr, "printed as %s: %s at %zu\n", printed, aemp_strerror(rc), pos);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(again.len == len && memcmp(again.data, b.data + before, len) == 0);
        aemp_buf_free(&again);
    }
    aemp_buf_free(&b);
    return 0;
}
