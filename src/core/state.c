/*
 * state.c - the one after-fork handler, this process's pid and its
 * identity as a child (see state.h).
 */
#include "state.h"

#include <pthread.h>
#include <unistd.h>

static const lmp_fork_hooks *slots[LMP_STATE_SLOTS];
static pid_t self_pid;
static lmp_identity identity = {-1, -1, 0, -1, NULL};

lmp_identity *lmp_identity_get(void) { return &identity; }

void lmp_identity_set(int result_w, int parent_r, pid_t parent_pid, void *inherited) {
    identity = (lmp_identity){result_w, parent_r, parent_pid, -1, inherited};
}

pid_t lmp_self(void) {
    if (!self_pid) self_pid = getpid();
    return self_pid;
}

/* Only the forking thread exists in the child, so a lock another thread
 * held at fork would never be released there, and what it guards could
 * be half-changed: the forking thread takes every lock first (prepare),
 * so the child inherits them free and the state consistent. */
static void on_prepare(void) {
    for (int i = 0; i < LMP_STATE_SLOTS; i++)
        if (slots[i] && slots[i]->prepare) slots[i]->prepare();
}

static void on_parent(void) {
    for (int i = LMP_STATE_SLOTS - 1; i >= 0; i--)
        if (slots[i] && slots[i]->parent) slots[i]->parent();
}

static void on_child(void) {
    self_pid = 0;
    for (int i = LMP_STATE_SLOTS - 1; i >= 0; i--)
        if (slots[i] && slots[i]->child) slots[i]->child();
}

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static void install(void) { pthread_atfork(on_prepare, on_parent, on_child); }

void lmp_state_on_fork(int slot, const lmp_fork_hooks *h) {
    if (slot < 0 || slot >= LMP_STATE_SLOTS) return;
    pthread_once(&install_once, install);
    slots[slot] = h;
}
