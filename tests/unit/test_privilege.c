/*
 * tests/unit/test_privilege.c - common/privilege.c: after enforcing, the
 * process is non-dumpable with a zero core limit and a 077 umask; root is
 * refused unless allowed (checked only when the test runs as root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/privilege.h"

static void test_enforce_locks_down(void **state)
{
    (void)state;
    umask(022);
    assert_int_equal(slm_privilege_enforce(true, false), SLM_OK);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    struct rlimit core;
    assert_int_equal(getrlimit(RLIMIT_CORE, &core), 0);
    assert_int_equal(core.rlim_cur, 0);
    const mode_t old = umask(0);
    assert_int_equal(old, 077);
}

static void test_core_dump_allowed_keeps_dumpable(void **state)
{
    (void)state;
    /* A fresh process would be dumpable; here, only that asking for core
     * dumps does not change the setting and still sets the umask. */
    assert_int_equal(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
    umask(022);
    assert_int_equal(slm_privilege_enforce(true, true), SLM_OK);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
    assert_int_equal(umask(0), 077);
}

static void test_root_refused_unless_allowed(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        /* Not root: nothing to refuse, and enforcing must succeed. */
        assert_int_equal(slm_privilege_enforce(false, false), SLM_OK);
        return;
    }
    assert_int_equal(slm_privilege_enforce(false, false), SLM_ERR_INVALID);
    assert_non_null(strstr(slm_error_message(), "--allow-root"));
    assert_int_equal(slm_privilege_enforce(true, false), SLM_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enforce_locks_down),
        cmocka_unit_test(test_core_dump_allowed_keeps_dumpable),
        cmocka_unit_test(test_root_refused_unless_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
