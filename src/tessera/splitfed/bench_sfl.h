// SFL runs as the commands start them: a training in process (`sfl train`, with the central
// baseline), the gRPC server (`sfl server`, optionally from a ResSFL expert) and one gRPC client
// process (`sfl client`, optionally running an MI defense).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/net/transport.h"
#include "tessera/splitfed/bench_common.h"
#include "tessera/splitfed/bench_extraction.h"
#include "tessera/splitfed/resistance.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {

struct TrainSflOptions {
  SflRunOptions run;
  std::string checkpoint;  ///< atomic server checkpoint after every epoch, resumed ("" = none)
  bool central = false;    ///< also the central baseline (train_central)
  nlohmann::json to_json() const;
};

struct TrainSflResult {
  SflOptions sfl;
  RunResult run;
  std::optional<CentralResult> central;
  /// "SFL (K clients, v2, cut k): test accuracy ...% in ... s", the central line and, with a
  /// central curve, the first epoch from which SFL stays within 1 point of central.
  std::string summary() const;
  /// With a central curve (central trained here): epoch, SFL test acc %, central test acc %,
  /// gap (points, central minus SFL). Empty without one.
  Table convergence_table() const;
  /// The first epoch (1-based) from which every later epoch's SFL test accuracy is at most
  /// `points` below central's at the same epoch (above it counts as within); -1 when none is,
  /// or without a central curve.
  int64_t epoch_within(double points) const;
  /// The history table, the convergence table, then the summary.
  std::string to_string() const;
  nlohmann::json to_json() const;
  /// Test accuracy against the epoch: SFL, and central (a curve when trained here, else its
  /// final accuracy as a flat line).
  std::string svg() const;
};

TrainSflResult train_sfl(const TrainSflOptions& options);

/// The gRPC server of one run.
struct ServeOptions {
  SflRunOptions run;
  std::string listen = "127.0.0.1:50051";  ///< host:port (loopback unless TLS or insecure)
  std::string tokens;     ///< file of "client_id token" lines, one distinct token per client id
  bool insecure = false;  ///< allow plain text on a non-loopback address
  int64_t max_message_mb = 64;    ///< largest message accepted or sent, MiB
  double step_timeout_s = 60.0;   ///< a client that misses its turn is dropped for the epoch
  double join_timeout_s = 300.0;  ///< a client not heard from yet is waited for this long
  Aggregation aggregation = Aggregation::mean;  ///< robust averaging of the client states
  double clip_factor = 2.0;     ///< mean: update norm bound, x the median norm (0 = off)
  double max_activation = 1e4;  ///< |z| bound of a step (ServerSettings)
  double max_weight = 1e4;      ///< bound of server weights, BN statistics, client states
  std::string checkpoint = "sfl_server.ckpt";  ///< after every epoch ("" = none)
  bool resume = false;                         ///< continue from checkpoint if it exists
  std::string tls_cert, tls_key;               ///< PEM files: serve over TLS only
  /// An expert (`sfl pretrain`): ResSFL step B, clients and server start from its feature layers.
  std::string from;

  void validate() const;
  nlohmann::json to_json() const;
};

struct ServeResult {
  SflOptions sfl;
  RunResult run;
  std::string summary() const;    ///< "SFL over gRPC: test accuracy ...% in ... s"
  std::string to_string() const;  ///< the history table, then the summary
  nlohmann::json to_json() const;
};

ServeResult serve(const ServeOptions& options);

/// One client process: everything else comes from the server.
struct JoinOptions {
  net::ClientOptions net;   ///< address, client id, token, TLS server name (the rest below)
  DataOptions data;         ///< its copy of the training set (the server says how much it uses)
  int64_t image_size = 32;  ///< must match the server's
  /// The token, when net.token is empty: this file (the token alone, or "client_id token"
  /// lines), else the environment variable TESSERA_SFL_TOKEN. Neither shows in `ps`.
  std::string token_file;
  bool insecure = false;  ///< allow plain text to a non-loopback server
  /// A poisoning client for the robustness checks: scales of its smashed data (first step of
  /// each epoch) and of its submitted state (PoisonStrategy). {1, 1}: honest.
  std::vector<double> poison = {1.0, 1.0};
  double timeout_s = 120.0;     ///< one call (turns included)
  double retry_s = 60.0;        ///< retrying an unreachable server
  int64_t max_message_mb = 64;  ///< largest message, MiB
  std::string tls_ca;           ///< PEM root certificates (implies TLS)
  DefenseOptions defense;       ///< an MI defense run by this client (none: honest)

  JoinOptions();
  void validate() const;
};

ClientReport join(const JoinOptions& options);

}  // namespace tessera::splitfed
