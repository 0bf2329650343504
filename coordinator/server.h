/*
 * coordinator/server.h - the client-facing front end of `shardlm serve`.
 *
 * A ZeroMQ ROUTER on the configured endpoint takes client messages
 * (proto/client.proto), each validated by proto/client_wire.c before use.
 * Generate requests wait in a bounded queue (full: RESOURCE_EXHAUSTED at
 * once, so memory never grows with the load) and run one at a time on the
 * cluster, each streaming a Chunk per token and ending with one Final or one
 * Error. Cancel, Health and Info are answered between steps: the cluster's
 * waits watch the client socket, so a long generation does not make the
 * server deaf. Deadlines are checked before every step and in the queue.
 *
 * When a shard is lost, every running and queued request ends with
 * UNAVAILABLE naming the rank, and slm_server_run returns the failure so
 * that the caller can end the job (a tensor group cannot go on without a
 * member). SIGTERM and SIGINT end serving the same way, with a message
 * saying the server is shutting down.
 */
#ifndef SLM_COORDINATOR_SERVER_H
#define SLM_COORDINATOR_SERVER_H

#include <stdint.h>

#include "common/status.h"
#include "coordinator/cluster.h"
#include "model/chat.h"
#include "model/tokenizer.h"

/* Loopback only unless told otherwise. */
#define SLM_SERVER_DEFAULT_LISTEN "tcp://127.0.0.1:5555"

typedef struct {
    const char *listen;      /* ZeroMQ endpoint to bind */
    const char *model_name;  /* reported by Info */
    int32_t tp, pp;          /* reported by Info */
    uint32_t queue_depth;    /* requests waiting behind the running one */
    uint32_t max_tokens;     /* cap on a request's max_tokens */
    uint32_t default_tokens; /* a request's max_tokens when it gives 0 */
    /* Authentication (issue 6): CURVE with the secret key in
     * server_key_file (0600) and a ZAP handler admitting only the keys of
     * clients_file (lines "<public key> <tenant>"); or, with insecure, a
     * plaintext socket and a warning. Security events go to audit_log
     * (NULL: stderr). */
    const char *server_key_file;
    const char *clients_file;
    const char *audit_log;
    bool insecure;
    /* Requests of a tenant whose prompts begin alike share the KV blocks
     * of that beginning (coordinator/kvpool.h); false: none are shared. */
    bool prefix_cache;
    /* Chat requests (GenerateRequest.messages) are rendered in this format
     * (borrowed; model/chat.h); NULL: they are refused with
     * INVALID_ARGUMENT and chat_unavailable (why the model has none). */
    const slm_chat_t *chat;
    const char *chat_unavailable;
} slm_server_options;

/* Serves until a signal (SLM_OK once every request is answered) or until
 * the cluster fails (its status, after every request got UNAVAILABLE).
 * Bind failures are returned before anything is served. cluster, cfg and
 * tok are borrowed. */
slm_status slm_server_run(slm_cluster_t *cluster, const slm_model_config *cfg,
                          const slm_tokenizer_t *tok,
                          const slm_server_options *o);

#endif
