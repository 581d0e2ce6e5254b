/*
 * forkserver.h - the forkserver: a small server process, a fresh `luamp`
 * runner started on first use, that forks children on request.
 *
 * Provides: the server's loop (lmp_forkserver_serve, run by the runner in
 * `--luamp-child forkserver` mode) and the owner's clean-up; the client side is
 * lmp_method_forkserver (method.h).
 *
 * Protocol.  The owner binds a SOCK_SEQPACKET unix socket in the abstract
 * namespace under a random name (nothing is created on disk, so nothing
 * is left behind however the owner ends), starts the server with the
 * listening socket at descriptor 3 and the read end of an "alive" pipe at
 * 4, and connects.  The server refuses a peer whose uid differs from its
 * own (SO_PEERCRED).  A request is one message:
 *     struct lmp_fs_request  +  SCM_RIGHTS: payload memfd, result channel
 *     (write end), status socket (one end), parent sentinel, then the
 *     payload's own descriptors
 * and the reply one message:
 *     struct lmp_fs_reply  +  SCM_RIGHTS: a pidfd of the child (if any)
 * The owner trusts no reply: the pid must be > 1 and a child of the
 * server (/proc/PID/status PPid), the pidfd must refer to it (fdinfo);
 * otherwise the start fails with EPROTO and the server is replaced.  A
 * connection that dies before the reply (the server was killed) is
 * retried with a new server.
 * The server sends the child's exit status (an int: n, or -signum) on the
 * status socket once it has reaped it, and closes it; the other end is the
 * owner's sentinel.  Every child dies with the server (PR_SET_PDEATHSIG),
 * so none outlives it unkillable; a child whose server died reports 255
 * once its pidfd says it is gone.  When the owner ends, the alive pipe
 * reads EOF: the server kills its daemonic children, waits for the others
 * to end (as fork children of a killed owner run on), and exits.
 * Uses: core/sys.h, exec.h.  Must never: include lua.h.
 */
#ifndef LMP_FORKSERVER_H
#define LMP_FORKSERVER_H

#include <stdint.h>
#include <sys/types.h>

#include "core/bounds.h"

#define LMP_FS_MAGIC 0x4c4d5031u /* "LMP1" */
/* Seconds the owner waits for a reply before it replaces the server. */
#define LMP_FS_REPLY_TIMEOUT 30.0
/* Descriptors of a request besides the payload's own. */
#define LMP_FS_FIXED 4
/* Where the server finds the listening socket and the alive pipe. */
#define LMP_FS_LISTEN_FD 3
#define LMP_FS_ALIVE_FD 4

struct lmp_fs_request {
    uint32_t magic;
    uint32_t daemon;
};

struct lmp_fs_reply {
    int32_t err; /* 0 or an errno */
    int32_t pid;
};

/* What a child of the server starts from. */
typedef struct lmp_served {
    int payload_fd;
    int result_w;
    int parent_fd; /* readable when the owner ends */
    int fds[LMP_PASS_MAXFDS - LMP_FS_FIXED]; /* the payload's own descriptors */
    int nfds;
} lmp_served;

/* The server's loop, on the listening socket and the alive pipe.
 * Returns 0 when the owner has ended (the server should exit), 1 in a
 * newly forked child with *out filled (its signals reset, every server
 * descriptor closed), -errno if the server cannot run at all. */
int lmp_forkserver_serve(int listen_fd, int alive_fd, lmp_served *out);

/* The owner's end: close the connection and reap the server (called by
 * the exit clean-up; no-op without a server). */
void lmp_forkserver_stop(void);

/* The server's pid, or 0 if none is running for this process; fds gets
 * the descriptors this process holds for it (-1 where none), for tests
 * that look for leaked descriptors. */
pid_t lmp_forkserver_pid(int fds[3]);

#endif
