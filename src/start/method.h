/*
 * method.h - the start methods behind one interface.
 *
 * Provides: struct lmp_method, one whole strategy per way of creating a
 * child: "fork" (a copy of the caller; start returns in the child),
 * "spawn" (a fresh runner executed with the payload) and "forkserver" (a
 * fresh runner, started once, forks the children).  Each says how a
 * child is started, how it is reaped and signalled (the lmp_child_ops
 * its records get), and what a child started in a fresh runner receives
 * and where (become).  One registry, lmp_methods, lists them; nothing
 * outside src/start/ asks which method it is, it asks the table.  The
 * Lua binding picks a method by name and never forks itself.
 * Uses: core/child.h, core/bounds.h.  Must never: include lua.h.
 */
#ifndef LMP_METHOD_H
#define LMP_METHOD_H

#include "core/bounds.h"
#include "core/child.h"

/* What a fresh runtime needs to become the child (spawn, forkserver): a
 * memfd holding the encoded bootstrap (see src/lua/lpayload.c) and the
 * descriptors the values in it refer to (Connections, Queues), in order. */
typedef struct lmp_payload {
    int fd;
    const int *fds;
    int nfds;
} lmp_payload;

typedef struct lmp_start_opts {
    int daemon; /* the child dies with its parent (PR_SET_PDEATHSIG) */
    const lmp_payload *payload; /* spawn, forkserver: required */
} lmp_start_opts;

/* What a child learns about itself when a method returns in it. */
typedef struct lmp_child_info {
    int result_w;     /* write end of the result channel */
    int parent_r;     /* fallback only: parent sentinel (EOF when it dies) */
    pid_t parent_pid; /* the creating process */
} lmp_child_info;

/* What a child started in a fresh runner begins with (become). */
typedef struct lmp_child_start {
    int payload_fd;                 /* the payload memfd, for the binding */
    int result_w, parent_r;         /* as in lmp_child_info (parent_r -1:
                                     * use a pidfd of the parent) */
    int fds[LMP_PAYLOAD_MAXFDS];    /* the payload's own descriptors */
    int nfds;
} lmp_child_start;

typedef struct lmp_method {
    const char *name;
    /* 1: start returns in a copy of the caller (fork), which needs no
     * payload; 0: the child is a fresh runner and a payload is required. */
    int copies_caller;
    /* Create a child for record c (linked into r on success, its ops
     * set).  Returns 0 in the parent, 1 in the child (copies_caller
     * methods only; *info is filled then), -errno when the OS refuses:
     * nothing is left behind and c is untouched but for its fields being
     * reset. */
    int (*start)(lmp_reg *r, lmp_child *c, const lmp_start_opts *o, lmp_child_info *info);
    /* In a runner executed by this method (`luamp --luamp-child NAME
     * ARGS...`; argv holds ARGS): become the child.  1 with *out filled
     * (its descriptors close-on-exec, the channels tracked), 0 when there
     * is no child to be (a forkserver whose owner has ended), -errno.
     * NULL for copies_caller methods. */
    int (*become)(int argc, char *const argv[], lmp_child_start *out);
} lmp_method;

/* What fork and spawn share (channels.c).  The descriptors between a
 * parent and a child it creates itself, all O_CLOEXEC: res, the result
 * channel (parent reads res[0]); without pidfds, death (the child holds
 * death[1]; EOF tells the parent it ended) and par (the parent holds
 * par[1]; EOF tells the child its parent ended); with pidfds, spare, a
 * descriptor slot kept for the pidfd so that the descriptor limit refuses
 * start() before any child exists. */
typedef struct lmp_channels {
    int res[2], death[2], par[2];
    int spare;
    int use_pidfd;
} lmp_channels;

/* 0, or -errno with nothing left open. */
int lmp_channels_open(lmp_channels *ch);
/* Close every descriptor still open (a failed start). */
void lmp_channels_close(lmp_channels *ch);
/* In the parent once the child pid exists: close the child's ends, open
 * its sentinel (a pidfd, or death[0]), fill c and link it into r.  0, or
 * -errno after killing and reaping the child and closing everything. */
int lmp_channels_adopt(lmp_channels *ch, lmp_reg *r, lmp_child *c, pid_t pid, int daemon);
/* In a child started in a fresh runner: fd, one of its channels, becomes
 * private (close-on-exec, tracked: closed in its own fork children). */
void lmp_channels_keep(int fd);

/* What every method shares with the others, the forkserver included: */
/* A close-on-exec AF_UNIX stream socketpair with neither end on 0-2 (the
 * result channel; the forkserver's status socket).  0, or -errno with
 * nothing open. */
int lmp_channels_socket(int sv[2]);
/* A close-on-exec pipe with neither end on 0-2 (the death and parent
 * pipes without pidfds).  0, or -errno with nothing open. */
int lmp_channels_pipe(int p[2]);
/* The parent's side of a child that exists: its record filled, the
 * descriptors it now owns tracked (-1: none), linked into r. */
typedef struct lmp_attach {
    pid_t pid;
    const lmp_child_ops *ops; /* how it is reaped and signalled */
    int sentinel, is_pidfd;   /* is_pidfd: the sentinel is the child's pidfd */
    int pidfd;                /* a pidfd besides the sentinel, for signals */
    int result_fd, parent_w;
    int daemon;
} lmp_attach;
void lmp_channels_attach(lmp_reg *r, lmp_child *c, const lmp_attach *a);

extern const lmp_method lmp_method_fork;
extern const lmp_method lmp_method_spawn;
extern const lmp_method lmp_method_forkserver;

/* The registry: every method, the default first, NULL-terminated. */
extern const lmp_method *const lmp_methods[];

/* "fork" -> &lmp_method_fork...; NULL for a method that does not exist. */
const lmp_method *lmp_method_find(const char *name);

/* The runner's argument that starts its child mode (then the method's
 * name and its arguments). */
#define LMP_CHILD_MODE "--luamp-child"

#endif
