/*
 * exec.c - run a program with only the descriptors it needs (see exec.h).
 *
 * vfork, not fork: the child borrows the caller's memory until it execs,
 * so the cost does not grow with the caller's size, and nothing of the
 * caller runs in it.  Between vfork and exec the child only makes system
 * calls on its own stack: dup2, close_range, sigaction, sigprocmask,
 * prctl, execve, write, _exit.  Every signal is blocked across vfork, so
 * no handler of the caller's can run in the borrowed memory; the child
 * resets the handlers before it unblocks them.
 *
 * A failed exec is reported through a close-on-exec pipe: EOF means the
 * exec happened, four bytes are the errno of the exec that did not.
 */
#include "exec.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/state.h"
#include "core/sys.h"

extern char **environ;

typedef struct exec_req {
    const char *exe;
    char *const *argv;
    const int *src; /* descriptors to become 3, 4, ... (all >= 3 + nfds) */
    int nfds;
    int err_w; /* the error pipe (>= 3 + nfds, close-on-exec) */
    int flags;
} exec_req;

static void close_from(int lo, int hi) {
    if (lo > hi) return;
    if (syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX); /* kernels before 5.9 */
    if (max < 0 || max > 65536) max = 65536;
    if (hi > max) hi = (int)max;
    for (int fd = lo; fd <= hi; fd++) close(fd);
}

__attribute__((noreturn, noinline)) static void in_child(const exec_req *q) {
    int i;
    for (i = 0; i < q->nfds; i++)
        if (dup2(q->src[i], 3 + i) < 0) goto fail; /* dup2 clears O_CLOEXEC */
    close_from(3 + q->nfds, q->err_w - 1);
    close_from(q->err_w + 1, INT_MAX);
    /* kept across exec; the parent is alive: it waits for us in vfork */
    if ((q->flags & LMP_EXEC_DIE_WITH_PARENT) && prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) goto fail;
    lmp_signals_reset();
    execve(q->exe, q->argv, environ);
fail:;
    int e = errno;
    while (write(q->err_w, &e, sizeof e) < 0 && errno == EINTR) {}
    _exit(127);
}

/* vfork in a function of its own that touches nothing after it returns
 * twice but its argument. */
__attribute__((noinline)) static pid_t vfork_exec(const exec_req *q) {
    pid_t pid = vfork();
    if (pid == 0) in_child(q);
    return pid;
}

pid_t lmp_exec(const char *exe, char *const argv[], const int *fds, int nfds, int flags) {
    if (nfds < 0 || nfds > LMP_EXEC_MAXFDS) return -EINVAL;
    int src[LMP_EXEC_MAXFDS];
    int errp[2] = {-1, -1};
    int n = 0, rc = 0;
    /* Above every target number, so that no dup2 clobbers a source yet to
     * be moved, and never equal to its target (dup2 would keep CLOEXEC). */
    for (; n < nfds; n++) {
        src[n] = fcntl(fds[n], F_DUPFD_CLOEXEC, 3 + nfds);
        if (src[n] < 0) {
            rc = -errno;
            goto out;
        }
    }
    if (pipe2(errp, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    exec_req q = {exe, argv, src, nfds, -1, flags};
    q.err_w = fcntl(errp[1], F_DUPFD_CLOEXEC, 3 + nfds);
    close(errp[1]);
    errp[1] = q.err_w;
    if (q.err_w < 0) {
        rc = -errno;
        goto out;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = lmp_fault_hit("fork");
    pid_t pid = rc ? -1 : vfork_exec(&q);
    if (pid < 0 && !rc) rc = -errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) goto out;
    close(errp[1]);
    errp[1] = -1;
    int e = 0;
    ssize_t got;
    do got = read(errp[0], &e, sizeof e);
    while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof e) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        rc = -(e > 0 ? e : EIO);
    } else {
        rc = pid;
    }
out:
    for (int i = 0; i < n; i++) close(src[i]);
    if (errp[0] >= 0) close(errp[0]);
    if (errp[1] >= 0) close(errp[1]);
    return rc;
}

/* ---- finding the runner ---------------------------------------------- */

/* The path itself is process-wide state (core/state.c keeps it). */
int lmp_set_runner_path(const char *path) { return lmp_runner_set(path); }

/* dir/luamp or dir/bin/luamp, for dir = the directory of the shared object
 * holding this code and up to three of its parents. */
static char *search(void) {
    Dl_info info;
    char dir[PATH_MAX], cand[PATH_MAX + 16];
    if (dladdr((void *)search, &info) && info.dli_fname && info.dli_fname[0] &&
        realpath(info.dli_fname, dir)) {
        for (int up = 0; up < 4; up++) {
            char *slash = strrchr(dir, '/');
            if (!slash) break;
            *slash = '\0';
            static const char *const names[] = {"/luamp", "/bin/luamp"};
            for (int i = 0; i < 2; i++) {
                size_t len = strlen(dir);
                memcpy(cand, dir, len);
                strcpy(cand + len, names[i]);
                struct stat st;
                if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0)
                    return strdup(cand);
            }
        }
    }
#ifdef LUAMP_BINDIR
    return strdup(LUAMP_BINDIR "/luamp");
#else
    return strdup("luamp");
#endif
}

int lmp_runner_path(char *buf, size_t size) { return lmp_runner_get(buf, size, search); }
