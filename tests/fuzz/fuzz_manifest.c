/*
 * tests/fuzz/fuzz_manifest.c - libFuzzer target for the manifest parser.
 *
 * Input: the manifest text itself. A manifest that parses must satisfy what
 * verification relies on: 1 to SLM_MANIFEST_MAX_FILES entries, every name
 * one the format allows, strictly increasing, each findable by name; sizes
 * within the limit; and the format is canonical, so formatting the parsed
 * manifest gives back exactly the input bytes. A failure must leave no
 * object and say why.
 *
 * Build (bash): clang -g -fsanitize=fuzzer,address,undefined -I. \
 *   tests/fuzz/fuzz_manifest.c model/manifest.c \
 *   common/{status,reader,file,keyfile}.c -lsodium -o fuzz_manifest
 * Seeds: tests/fuzz/corpus/manifest/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    slm_manifest_t *m = NULL;
    if (slm_manifest_parse(data, size, "fuzz", &m) != SLM_OK) {
        if (m != NULL || slm_error_message()[0] == '\0')
            abort();
        return 0;
    }
    const size_t n = slm_manifest_count(m);
    if (n == 0 || n > SLM_MANIFEST_MAX_FILES)
        abort();
    for (size_t i = 0; i < n; i++) {
        const slm_manifest_entry *e = slm_manifest_entry_at(m, i);
        const size_t len = strlen(e->name);
        if (slm_manifest_name_problem(e->name, len) != NULL ||
            e->size > SLM_MANIFEST_MAX_FILE_SIZE ||
            slm_manifest_find(m, e->name) != e)
            abort();
        if (i > 0 &&
            strcmp(slm_manifest_entry_at(m, i - 1)->name, e->name) >= 0)
            abort();
    }
    if (slm_manifest_entry_at(m, n) != NULL)
        abort();
    char *text = NULL;
    size_t len = 0;
    if (slm_manifest_format(m, &text, &len) != SLM_OK || len != size ||
        memcmp(text, data, size) != 0)
        abort(); /* parse then format must be the identity */
    free(text);
    slm_manifest_destroy(&m);
    return 0;
}
