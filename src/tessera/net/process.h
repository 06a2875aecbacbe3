// Child processes for the loopback transport benchmarks (splitfed, metagater): start the tessera
// binary with arguments and a log file, wait for it, stop it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace tessera::net {

/// Starts `executable` with `args` (args[0] is its name), stdout and stderr to `log_path`.
/// Throws tessera::Error when it cannot be started.
pid_t spawn_process(const std::string& executable, const std::vector<std::string>& args,
                    const std::string& log_path);
/// Waits for the child; returns its exit code (128 + signal when killed).
int wait_process(pid_t pid);
/// Sends SIGTERM to the child and waits for it; returns its exit code.
int stop_process(pid_t pid);

}  // namespace tessera::net
