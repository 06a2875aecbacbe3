// SFL runs as the commands start them: a training in process (`sfl train`, with the central
// baseline), the gRPC server (`sfl server`, optionally from a ResSFL expert) and one gRPC client
// process (`sfl client`, optionally running an MI defense).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

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
  /// "SFL (K clients, v2, cut k): test accuracy ...% in ... s" and the central line.
  std::string summary() const;
  /// The history table, then the summary.
  std::string to_string() const;
  nlohmann::json to_json() const;
};

TrainSflResult train_sfl(const TrainSflOptions& options);

/// The gRPC server of one run.
struct ServeOptions {
  SflRunOptions run;
  std::string listen = "0.0.0.0:50051";  ///< host:port
  std::string tokens;                    ///< file of "client_id token" lines
  std::string token;                     ///< one secret for every client (when no tokens file)
  int64_t max_message_mb = 64;           ///< largest message accepted or sent, MiB
  double step_timeout_s = 60.0;          ///< a client that misses its turn is dropped for the epoch
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
  net::ClientOptions net;       ///< address, client id, token, TLS server name (the rest below)
  DataOptions data;             ///< its copy of the training set (the server says how much it uses)
  int64_t image_size = 32;      ///< must match the server's
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
