/*
 * coordinator/manifest_cmd.h - `shardlm manifest` and `shardlm keygen --sign`:
 * the command-line faces of model/manifest.h.
 */
#ifndef SLM_COORDINATOR_MANIFEST_CMD_H
#define SLM_COORDINATOR_MANIFEST_CMD_H

#include <stdbool.h>

#include "common/status.h"

/* argv[0] is "manifest":
 *   manifest --out M [--sign SECRET_KEY] FILE...
 *   manifest --verify M [--public-key PUB] [FILE...]
 * Returns the process exit status: 0 on success, 1 on failure (message on
 * stderr), 2 on a usage error. */
int slm_manifest_main(int argc, char **argv);

/* argv[0] is "keygen": keygen --sign PREFIX writes PREFIX.secret (0600) and
 * PREFIX.public. Same exit statuses. */
int slm_keygen_sign_main(int argc, char **argv);

/* What generate, run and serve do with --manifest M [--public-key PUB]
 * before any weight is used: verify M (and its signature, with PUB) covering
 * the model and tokenizer about to be loaded. With `say` set, prints the cost
 * ("manifest verified: ...") to stderr prefixed by `who`. manifest NULL:
 * nothing to check (a --public-key without --manifest is refused). */
slm_status slm_manifest_check_inputs(const char *manifest,
                                     const char *public_key, const char *model,
                                     const char *tokenizer, const char *who,
                                     bool say);

#endif
