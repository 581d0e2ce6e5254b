-- process/internal.lua - process.internal: the hooks the runner, the
-- specs, the benchmarks and the module's own other files use, kept out of
-- the public table (require "process.internal").
--
-- Nothing here is API (doc/API.md): a hook may change with the code it
-- reaches.  It must never hold state of its own nor wrap a hook in new
-- behaviour: each entry is a function of the core or of another file,
-- as it is.
local core = ...
local errors = require "process.errors"
local proc = require "process.proc"

return {
  -- The runner's child mode (src/runner/main.c): a spawn or forkserver
  -- child's entry.
  child_main = proc.child_main,
  -- An error value as lua.c shows it (the child's and the Pool task's
  -- handlers).
  error_text = errors.error_text,
  -- Test hook: make the next n calls of a system operation fail,
  -- e.g. fault("fork", "EAGAIN") to see start() refused without a real
  -- process limit (root ignores RLIMIT_NPROC).
  fault = core.fault,
  -- Monotonic seconds, and the codec by itself (benchmarks and tests).
  now = core.now,
  -- How many objects one wait watches (core/bounds.h LMP_WAIT_MAX).
  WAIT_MAX = core.WAIT_MAX,
  encode = core.encode,
  decode = core.decode,
  -- Whether sentinels are pidfds (false: the pipe fallback is in use).
  have_pidfd = core.have_pidfd,
  -- The forkserver's pid (nil when none runs), and the runner spawn uses.
  forkserver_pid = core.forkserver_pid,
  get_executable = core.get_executable,
}
