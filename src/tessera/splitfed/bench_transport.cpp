// The transport benchmark: an in-process run, then the same run as child processes on loopback
// (see bench_transport.h).
#include "tessera/splitfed/bench_transport.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/timer.h"
#include "tessera/net/process.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {
namespace {

std::string address(const TransportBenchOptions& options) {
  return fmt::format("127.0.0.1:{}", options.port);
}

}  // namespace

void TransportBenchOptions::validate() const {
  run.validate();
  TESSERA_CHECK(port >= 1 && port <= 65535, "--port {} must be in [1, 65535]", port);
  TESSERA_CHECK(process_threads >= 0, "--process-threads {} must be >= 0", process_threads);
  TESSERA_CHECK(!work_dir.empty(), "--work-dir must not be empty");
}

nlohmann::json TransportBenchOptions::to_json() const {
  return {{"run", run.to_json()},
          {"port", port},
          {"process_threads", process_threads},
          {"work_dir", work_dir}};
}

std::vector<std::string> transport_server_command(const TransportBenchOptions& options,
                                                  const SflOptions& o) {
  const DataOptions& data = options.run.data;
  const std::string& work = options.work_dir;
  return {"tessera",
          "--threads",
          std::to_string(options.process_threads),
          "sfl",
          "server",
          "--listen",
          address(options),
          "--tokens",
          work + "/tokens.txt",
          "--checkpoint",
          work + "/server.ckpt",
          "--out",
          work + "/grpc_run.safetensors",
          "--json",
          work + "/server.json",
          "--arch",
          o.model.name,
          "--width",
          fmt::format("{}", o.model.width_mult),
          "--image-size",
          std::to_string(o.model.image_size),
          "--cut",
          std::to_string(o.split.cut),
          "--bottleneck",
          std::to_string(o.split.bottleneck_channels),
          "--bottleneck-stride",
          std::to_string(o.split.bottleneck_stride),
          "--clients",
          std::to_string(o.n_clients),
          "--ordering",
          ordering_name(o.ordering),
          "--sample-ratio",
          fmt::format("{}", o.sample_ratio),
          "--partition",
          partition_name(o.partition),
          "--shards",
          std::to_string(o.shards_per_client),
          "--epochs",
          std::to_string(o.epochs),
          "--batch-size",
          std::to_string(o.batch_size),
          "--lr",
          fmt::format("{}", o.lr),
          "--client-lr",
          fmt::format("{}", o.client_lr),
          "--schedule",
          o.schedule,
          "--augment-pad",
          std::to_string(o.augment_pad),
          "--train-samples",
          std::to_string(data.train_samples),
          "--test-samples",
          std::to_string(data.test_samples),
          "--max-batches",
          std::to_string(o.max_batches_per_epoch),
          "--grad-noise",
          fmt::format("{}", o.grad_noise),
          "--l1",
          fmt::format("{}", o.client_l1),
          "--l2",
          fmt::format("{}", o.client_l2),
          "--seed",
          std::to_string(o.seed),
          "--data",
          data.dir};
}

std::vector<std::string> transport_client_command(const TransportBenchOptions& options,
                                                  const SflOptions& o, int64_t client) {
  return {"tessera",
          "--threads",
          std::to_string(options.process_threads),
          "sfl",
          "client",
          "--server",
          address(options),
          "--id",
          o.client_id(client),
          "--token-file",
          options.work_dir + "/tokens.txt",
          "--image-size",
          std::to_string(o.model.image_size),
          "--data",
          options.run.data.dir};
}

TransportBenchResult bench_transport(const TransportBenchOptions& options) {
  options.validate();
  TransportBenchResult result;
  // Both sides are timed end to end: data loading and training (the gRPC side from spawning the
  // processes until the last one exits).
  Timer local_timer;
  const SflData d = load_sfl_data(options.run.data, options.run.sfl.model.image_size);
  const SflOptions o = options.run.resolve(d.train.size());
  const std::string& work = options.work_dir;
  std::filesystem::create_directories(work);
  std::filesystem::remove(work + "/server.ckpt");  // a fresh run, not a resume
  const RunResult local = run_in_process(o, d.train, &d.test);
  result.in_process_seconds = local_timer.elapsed_s();
  result.in_process_accuracy = local.final_test_accuracy;
  result.in_process_training_seconds = local.seconds;
  result.torch_threads = torch::get_num_threads();
  result.n_clients = o.n_clients;
  result.process_threads = options.process_threads;

  // One token per client (the server refuses a shared one), in a file: not on a command line.
  std::string tokens;
  for (int64_t i = 0; i < o.n_clients; ++i) {
    tokens += fmt::format("{} loopback-{}-{}\n", o.client_id(i), o.seed, i);
  }
  write_file_atomic(work + "/tokens.txt", tokens);
  Timer timer;
  const pid_t server = net::spawn_process(options.executable, transport_server_command(options, o),
                                          work + "/server.log");
  std::vector<pid_t> clients;
  for (int64_t i = 0; i < o.n_clients; ++i) {
    clients.push_back(net::spawn_process(options.executable,
                                         transport_client_command(options, o, i),
                                         work + "/" + o.client_id(i) + ".log"));
  }
  int failures = 0;
  for (const pid_t pid : clients) failures += net::wait_process(pid) != 0;
  failures += net::wait_process(server) != 0;
  result.grpc_seconds = timer.elapsed_s();
  TESSERA_CHECK(failures == 0, "{} child process(es) failed; see the logs in {}", failures, work);
  const nlohmann::json report = parse_json(read_file(work + "/server.json"), work + "/server.json");
  const nlohmann::json& sfl = report.at("results").at("sfl");
  result.grpc_accuracy = sfl.at("final_test_accuracy").get<double>();
  result.grpc_server_seconds = sfl.at("seconds").get<double>();
  return result;
}

Table TransportBenchResult::table() const {
  Table table({"transport", "processes", "torch threads", "test acc %", "training s", "wall s",
               "wall ratio"});
  table.add_row({"in-process", "1", std::to_string(torch_threads), percent(in_process_accuracy),
                 fmt::format("{:.1f}", in_process_training_seconds),
                 fmt::format("{:.1f}", in_process_seconds), "1.00"});
  table.add_row(
      {"gRPC loopback", std::to_string(1 + n_clients),
       process_threads == 0 ? "per core" : std::to_string(process_threads) + " per process",
       percent(grpc_accuracy), fmt::format("{:.1f}", grpc_server_seconds),
       fmt::format("{:.1f}", grpc_seconds),
       fmt::format("{:.2f}", grpc_seconds / in_process_seconds)});
  return table;
}

std::string TransportBenchResult::summary() const {
  return fmt::format(
      "accuracy difference {:.2f} points; wall ratio {:.2f} (training s: in-process run, gRPC "
      "server from start to exit; wall s: data loading included, gRPC from spawn to the last "
      "exit)\n",
      100 * std::abs(grpc_accuracy - in_process_accuracy), grpc_seconds / in_process_seconds);
}

nlohmann::json TransportBenchResult::to_json() const {
  return {{"table", table().to_json()},
          {"in_process_accuracy", in_process_accuracy},
          {"grpc_accuracy", grpc_accuracy},
          {"in_process_seconds", in_process_seconds},
          {"in_process_training_seconds", in_process_training_seconds},
          {"grpc_seconds", grpc_seconds},
          {"grpc_server_seconds", grpc_server_seconds},
          {"process_threads", process_threads}};
}

}  // namespace tessera::splitfed
