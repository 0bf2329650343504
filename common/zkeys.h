/*
 * common/zkeys.h - CURVE key pairs (ZeroMQ RFC 26) kept in files.
 *
 * On disk, a key is its 32 bytes in Z85 (ZeroMQ RFC 32): exactly 40
 * characters of the Z85 alphabet, then one optional "\n". Nothing else - no
 * comments, no second line. A pair made by slm_zkeys_generate("keys/server")
 * is
 *   keys/server.key_secret   the secret key, mode 0600, owner only
 *   keys/server.key          the public key, mode 0644, to hand out
 * Key material is read from files only - never from argv (visible in ps) or
 * the environment (inherited by every child). Secret bytes are wiped from our
 * buffers once used.
 *
 * This file depends on libzmq and common/status only, so that the client
 * library can compile it in as well.
 */
#ifndef SLM_COMMON_ZKEYS_H
#define SLM_COMMON_ZKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* A Z85 key: 40 characters. Buffers for one hold SLM_ZKEY_Z85_BUF (NUL). */
#define SLM_ZKEY_Z85_LEN 40
#define SLM_ZKEY_Z85_BUF 41
#define SLM_ZKEY_BYTES   32
/* Bytes CURVE adds to each message frame on the wire ("\x07MESSAGE", flags,
 * nonce, MAC); ZMQ_MAXMSGSIZE counts them, so a CURVE socket's limit is the
 * application's limit plus this (measured in tests/unit/test_zap.c). */
#define SLM_ZKEY_CURVE_OVERHEAD 33
/* The longest prefix slm_zkeys_generate accepts (bytes, without suffix). */
#define SLM_ZKEY_PREFIX_MAX 4000

/* Makes a new key pair and writes PREFIX.key_secret (mode 0600) and
 * PREFIX.key (mode 0644). Both are created with O_CREAT|O_EXCL|O_NOFOLLOW:
 * an existing file (or a symlink planted in its place) is never overwritten;
 * then nothing is written and the error names the file. If the second file
 * cannot be made, the first is removed again. */
slm_status slm_zkeys_generate(const char *prefix);

/* Reads a secret key file and derives its public key. Refuses, with a message
 * naming the path and the problem: a symlink (opened O_NOFOLLOW), anything
 * but a regular file, a file not owned by the effective user, any group or
 * other permission bit ("mode 0644 is too open; chmod 600"), a wrong length,
 * a character outside Z85, a value that is not 32 bytes' encoding. On success
 * writes both keys as NUL-terminated Z85 (40 characters); on failure both
 * buffers are zeroed. The caller wipes secret_out (slm_zkeys_wipe) when done
 * with it. */
slm_status slm_zkeys_load_secret(const char *path,
                                 char public_out[SLM_ZKEY_Z85_BUF],
                                 char secret_out[SLM_ZKEY_Z85_BUF]);

/* Reads a public key file (same format). A public key is not secret, but who
 * can change it can redirect us to their server: refuses a file that group or
 * others may write, or one owned by neither the effective user nor root.
 * Symlinks are followed (a distributed key may be linked into place). */
slm_status slm_zkeys_load_public(const char *path, char out[SLM_ZKEY_Z85_BUF]);

/* Decodes a 40-character Z85 key (text need not be NUL-terminated; exactly
 * 40 bytes are read) into key[32]. Refuses characters outside the alphabet
 * and groups that overflow 32 bits (zmq_z85_decode alone would wrap them),
 * naming `what` (e.g. "keys/a.key" or "line 3") in the message. */
slm_status slm_zkeys_decode(const char *text, const char *what,
                            uint8_t key[SLM_ZKEY_BYTES]);

/* key[32] as NUL-terminated Z85 into out[41]. */
void slm_zkeys_encode(const uint8_t key[SLM_ZKEY_BYTES],
                      char out[SLM_ZKEY_Z85_BUF]);

/* Makes sock (a ROUTER, before zmq_bind) a CURVE server with the given
 * secret key whose peers the context's ZAP handler vets under zap_domain
 * (common/zap.h): sets ZMQ_CURVE_SERVER, ZMQ_CURVE_SECRETKEY, ZMQ_ZAP_DOMAIN
 * and ZMQ_ZAP_ENFORCE_DOMAIN. The last matters: without it libzmq 4.3 lets
 * every CURVE client in while no ZAP handler is bound ("Stonehouse"); with
 * it such handshakes fail. */
slm_status slm_zkeys_apply_server(void *sock,
                                  const char secret[SLM_ZKEY_Z85_BUF],
                                  const char *zap_domain);

/* Makes sock (a DEALER, before zmq_connect) a CURVE client that accepts
 * only the server holding server_public's secret and proves itself with
 * our key pair: ZMQ_CURVE_SERVERKEY, ZMQ_CURVE_PUBLICKEY,
 * ZMQ_CURVE_SECRETKEY. */
slm_status slm_zkeys_apply_client(void *sock,
                                  const char server_public[SLM_ZKEY_Z85_BUF],
                                  const char public_key[SLM_ZKEY_Z85_BUF],
                                  const char secret[SLM_ZKEY_Z85_BUF]);

/* A fresh key pair in memory (zmq_curve_keypair), for keys that live only as
 * long as a job: the control plane's. */
slm_status slm_zkeys_pair(char public_key[SLM_ZKEY_Z85_BUF],
                          char secret[SLM_ZKEY_Z85_BUF]);

/* Zeroes n bytes at p in a way the compiler may not drop. */
void slm_zkeys_wipe(void *p, size_t n);

/* Checks an open file's metadata for a file that holds security material:
 * a regular file, owned by the effective user (or by root, if allow_root),
 * with none of the permission bits in `forbidden` (077: owner only; 022: no
 * one else may write). The message names `path`, the problem and the fix.
 * Used for key files, allowlists and the audit log. */
slm_status slm_zkeys_check_fd(int fd, const char *path, unsigned forbidden,
                              int allow_root);

/* Opens `path` read-only with O_NOFOLLOW (unless follow) and O_NONBLOCK (a
 * FIFO must not hang us), checks it with slm_zkeys_check_fd and reads it
 * whole into buf(cap). A file of cap bytes or more is refused as too long,
 * so *len < cap. The caller wipes buf if it holds a secret. */
slm_status slm_zkeys_read_checked(const char *path, int follow,
                                  unsigned forbidden, int allow_root, char *buf,
                                  size_t cap, size_t *len);

#endif
