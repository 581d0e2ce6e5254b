/*
 * lsync.h - process.Lock, RLock, Semaphore, BoundedSemaphore, Event,
 * Condition, Barrier, Value, Array and process.sleep (lsync.c), and how
 * they travel to spawn and forkserver children (lpayload.c).
 */
#ifndef LMP_LSYNC_H
#define LMP_LSYNC_H

#include "lua.h"

/* [-0, +0, e]  Put the constructors and process.sleep in the table at
 * the top of the stack. */
void lmp_open_sync(lua_State *L);

/* The descriptor of the object at idx (still owned by it): 1, or 0 when
 * idx is not one. */
int lmp_sync_fd_of(lua_State *L, int idx, int *fd);

/* [-0, +1, e]  The stand-in for the object at idx, its descriptor being
 * number fd_index of the payload: {"Sync", fd_index, extra, tag, timeout}
 * where extra is the object it refers to (a Condition's or a Value's
 * lock, a Barrier's action). */
void lmp_sync_standin(lua_State *L, int idx, lua_Integer fd_index);

/* [-0, +1, m]  With the decoded stand-in on top, push the object rebuilt
 * over fd, which it then owns.  0, or -errno with nothing pushed (fd
 * stays the caller's). */
int lmp_sync_from_standin(lua_State *L, int fd);

#endif
