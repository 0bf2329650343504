/*
 * common/zap.h - who may connect: CURVE key allowlists and a ZAP handler
 * (ZeroMQ RFC 27) that enforces them.
 *
 * How it works. A server socket with
 *     ZMQ_CURVE_SERVER   = 1
 *     ZMQ_CURVE_SECRETKEY = the server's secret key (slm_zkeys_load_secret)
 *     ZMQ_ZAP_DOMAIN     = SLM_ZAP_DOMAIN_CLIENTS or SLM_ZAP_DOMAIN_SHARDS
 * asks the context's ZAP handler about every peer during the CURVE
 * handshake, after the peer has proved that it holds the secret key of the
 * public key it presents and before a single frame of its payload is
 * delivered. The handler here answers 200 with User-Id = the tenant name if
 * the key is in the domain's allowlist, else 400, and the handshake fails -
 * the application never sees the peer. The tenant is then on every message
 * from that connection: zmq_msg_gets(&msg, "User-Id").
 *
 * Fail-closed: by default libzmq 4.3 lets every CURVE client in while no
 * handler is bound in the context ("Stonehouse": encrypted, unauthenticated).
 * slm_zkeys_apply_server also sets ZMQ_ZAP_ENFORCE_DOMAIN, so that such
 * handshakes fail instead; still, start the handler before binding the
 * socket and stop it only after closing the socket. A plaintext peer (NULL
 * mechanism) cannot talk to a CURVE server socket at all (the greeting's
 * mechanisms differ); a socket in this context left without CURVE by mistake
 * but given a ZAP domain asks us about NULL-mechanism peers, and any
 * mechanism but CURVE is refused, as is an unknown domain.
 *
 * Sizes before authentication. ZeroMQ applies ZMQ_MAXMSGSIZE to the
 * handshake's commands too (measured with libzmq 4.3.4 in test_zap.c): HELLO
 * is 200 bytes and INITIATE about 260 plus its metadata, so a limit of 256
 * refuses every CURVE peer and 512 admits them; keep it at 512 or more. The
 * limit also counts the encrypted frame - the payload plus 33 bytes - so a
 * socket whose application limit is N bytes sets ZMQ_MAXMSGSIZE to N +
 * SLM_ZKEY_CURVE_OVERHEAD (33) once it speaks CURVE. Before its handshake is
 * done, a peer can make us hold nothing bigger than those commands; after it,
 * only a listed tenant reaches the message parser.
 *
 * Allowlist file format: UTF-8 text, lines ending in "\n" (the last may
 * lack it; "\r" is refused, so a file saved with DOS line endings says so).
 *     # comment (the first non-blank character is '#')
 *     <40-character Z85 public key> <tenant name>
 *     limits <tenant name or *> [concurrent=N] [tokens=N] [queue=P]
 * Blank lines and spaces/tabs around the fields are allowed; fields are
 * separated by spaces or tabs; anything after the tenant is refused. A
 * comment never collides with a key: a Z85 key cannot begin with '#' (that
 * would encode more than 32 bits), nor can "limits" be one (6 characters).
 * Tenant names are 1-64 of [A-Za-z0-9_.-]. A tenant may have several keys
 * (rotation); a key may appear only once.
 *
 * A limits line sets what one tenant may hold in the server (see
 * slm_tenant_limits), or with "*" the default of every tenant without a
 * line of its own; each tenant (and "*") at most once, every tenant named
 * must have a key (a typo would otherwise leave a tenant unlimited), each
 * setting at most once, N in 1..SLM_TENANT_LIMIT_MAX, P in 1..100.
 * Every line is checked; the first error names the source and line number.
 */
#ifndef SLM_COMMON_ZAP_H
#define SLM_COMMON_ZAP_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/audit.h"
#include "common/status.h"
#include "common/zkeys.h"

#define SLM_ZAP_ENDPOINT       "inproc://zeromq.zap.01"
#define SLM_ZAP_DOMAIN_CLIENTS "shardlm-clients"
#define SLM_ZAP_DOMAIN_SHARDS  "shardlm-shards"
/* The most entries an allowlist holds unless a caller says fewer. */
#define SLM_ALLOWLIST_MAX_ENTRIES 65536
#define SLM_ALLOWLIST_TENANT_MAX  64
#define SLM_ALLOWLIST_LINE_MAX    512
/* The most bytes slm_allowlist_load reads. */
#define SLM_ALLOWLIST_FILE_MAX ((size_t)16 << 20)

typedef struct slm_allowlist slm_allowlist_t;

#define SLM_TENANT_LIMIT_MAX 1000000u

/* What one tenant may hold in a server at once; 0 in a field = no limit of
 * that kind. */
typedef struct {
    uint32_t concurrent;  /* requests running or queued */
    uint32_t max_tokens;  /* completion tokens (max_tokens) per request */
    uint32_t queue_share; /* percent of the queue depth its waiting
                             requests may fill (at least one request) */
} slm_tenant_limits;

/* An empty list of at most max_entries (1..SLM_ALLOWLIST_MAX_ENTRIES). The
 * caller owns *out (slm_allowlist_destroy). */
slm_status slm_allowlist_create(size_t max_entries, slm_allowlist_t **out);

/* Parses text(len) (not NUL-terminated; a NUL byte is an error) in the file
 * format above, into a new list of at most max_entries. `source` names the
 * text in error messages ("keys/clients.allow:3: ..."). The caller owns *out
 * (slm_allowlist_destroy); on failure *out is NULL. */
slm_status slm_allowlist_parse(const char *text, size_t len, size_t max_entries,
                               const char *source, slm_allowlist_t **out);

/* Reads and parses a file: a regular file (not a symlink) owned by the
 * effective user that group and others may not write (0600 and 0644 are
 * fine). */
slm_status slm_allowlist_load(const char *path, size_t max_entries,
                              slm_allowlist_t **out);

/* Adds one key (Z85, 40 characters) for `tenant`, checked as in a file;
 * for lists built in memory, e.g. the per-job shard keys. Not safe while a
 * ZAP handler is using the list. */
slm_status slm_allowlist_add(slm_allowlist_t *l, const char *z85_key,
                             const char *tenant);

/* The tenant of key[32], or NULL. Borrowed; valid while l is. Safe to call
 * from several threads at once (the list is not changed by lookups). */
const char *slm_allowlist_find(const slm_allowlist_t *l,
                               const uint8_t key[SLM_ZKEY_BYTES]);

size_t slm_allowlist_count(const slm_allowlist_t *l);

/* The limits of `tenant`: its own limits line, else the "*" line, else no
 * limits (all 0). l may be NULL (no limits). */
slm_tenant_limits slm_allowlist_limits(const slm_allowlist_t *l,
                                       const char *tenant);

/* Frees *l and sets it to NULL; accepts NULL. */
void slm_allowlist_destroy(slm_allowlist_t **l);

typedef struct slm_zap slm_zap_t;

/* Binds a ZAP handler in zmq_ctx (at most one per context) and starts its
 * thread. Requests for SLM_ZAP_DOMAIN_CLIENTS are checked against `clients`,
 * for SLM_ZAP_DOMAIN_SHARDS against `shards`; a NULL list admits no one.
 * Every decision goes to `audit` (may be NULL): refusals as auth_refused
 * with peer address, domain, key and reason; admissions as auth_admitted
 * (if the log records them); malformed requests as malformed_message.
 * clients, shards and audit are borrowed: they must outlive the handler and
 * the lists must not change while it runs. The caller owns *out and stops it
 * with slm_zap_stop before zmq_ctx_term. */
slm_status slm_zap_start(void *zmq_ctx, const slm_allowlist_t *clients,
                         const slm_allowlist_t *shards, slm_audit_t *audit,
                         slm_zap_t **out);

/* Stops the thread, closes its sockets, frees *z and sets it to NULL.
 * Accepts NULL and *z == NULL. */
void slm_zap_stop(slm_zap_t **z);

/* Decisions so far (for tests and metrics); either pointer may be NULL. */
void slm_zap_counts(slm_zap_t *z, unsigned long long *admitted,
                    unsigned long long *refused);

/* Handshakes that fail after ZAP or before it: ZeroMQ tells only a server
 * socket's monitor (zmq_socket_monitor) of a frame that fails CURVE's checks
 * (tampered, replayed or reordered), a plaintext peer (mechanism mismatch), a
 * malformed handshake or a peer that hangs up during it. A server subscribes
 * its monitor to these events and passes each one here (event and value from
 * the monitor's 6-byte frame, peer its endpoint frame), which records it in
 * `audit` as frame_rejected in `domain`; other events are ignored. */
#define SLM_ZAP_HANDSHAKE_EVENTS                                               \
    (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
void slm_zap_audit_handshake(slm_audit_t *audit, const char *domain,
                             uint16_t event, uint32_t value, const char *peer);

#endif
