// posix_spawn with the output redirected to a log file; waitpid; SIGTERM.
#include "tessera/net/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include "tessera/core/error.h"

extern char** environ;

namespace tessera::net {

pid_t spawn_process(const std::string& executable, const std::vector<std::string>& args,
                    const std::string& log_path) {
  std::vector<char*> argv;
  for (const auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, executable.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  TESSERA_CHECK(rc == 0, "could not start {} (errno {})", executable, rc);
  return pid;
}

int wait_process(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int stop_process(pid_t pid) {
  kill(pid, SIGTERM);
  return wait_process(pid);
}

}  // namespace tessera::net
