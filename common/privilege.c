/* common/privilege.c - see privilege.h. */
#include "common/privilege.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

slm_status slm_privilege_enforce(bool allow_root, bool allow_core_dump)
{
    umask(077);
    if (!allow_core_dump) {
        const struct rlimit none = {0, 0};
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 ||
            setrlimit(RLIMIT_CORE, &none) != 0)
            return slm_fail(SLM_ERR_INTERNAL, "cannot turn core dumps off: %s",
                            strerror(errno));
    }
    if (geteuid() == 0 && !allow_root)
        return slm_fail(SLM_ERR_INVALID,
                        "refusing to run as root: whoever compromised this "
                        "process would own the machine; run it as an "
                        "unprivileged user, or pass --allow-root");
    return SLM_OK;
}
