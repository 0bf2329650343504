/*
 * common/privilege.h - least privilege for the processes that hold weights
 * and open sockets (generate, run, serve): not root unless asked, files
 * private by default, and no core dumps or ptrace attach that would hand the
 * weights and keys in memory to another local user.
 */
#ifndef SLM_COMMON_PRIVILEGE_H
#define SLM_COMMON_PRIVILEGE_H

#include <stdbool.h>

#include "common/status.h"

/* Sets umask 077; unless allow_core_dump, marks the process non-dumpable
 * (PR_SET_DUMPABLE 0: no core file, no ptrace by the same user, /proc files
 * owned by root) and sets the core-size limit to 0. Then, if the effective
 * user is root and !allow_root, fails with SLM_ERR_INVALID and a message
 * saying why and how to override (--allow-root). */
slm_status slm_privilege_enforce(bool allow_root, bool allow_core_dump);

#endif
