// The sub-net bench (see bench.h): the cached training stages, the side-by-side measurement of
// both methods, goals, plot, reference files and the tour step.
#include "tessera/subnet/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/core/stats.h"
#include "tessera/core/timer.h"
#include "tessera/subnet/training.h"
#include "tessera/train/train.h"

namespace tessera::subnet {
namespace {

train::TrainOptions base_train(const SubnetBenchOptions& o, int64_t steps, const char* label) {
  train::TrainOptions t;
  t.steps = steps;
  t.batch_size = o.batch_size;
  t.lr = o.lr;
  t.per_step_schedule = true;
  t.schedule = "cosine";
  t.seed = o.seed;
  t.progress_label = label;
  return t;
}

std::string data_name(const data::Dataset& train_set, const data::Dataset& val_set) {
  return fmt::format("{} ({} train, {} val)", train_set.name, train_set.size(), val_set.size());
}

std::string file_for(const std::string& prefix, const nlohmann::json& recipe) {
  return train::hash_key(prefix, recipe) + ".safetensors";
}

std::string build_pretrain(const data::Dataset& train_set, const data::Dataset& val_set,
                           const SubnetBenchOptions& o) {
  const auto recipe = pretrain_recipe(o, data_name(train_set, val_set));
  return train::cached_file(file_for("subnet-pretrain", recipe), [&](const std::string& path) {
    seed_everything(o.seed);
    SlimNet net(o.net);
    train_with_noise(net, train_set, base_train(o, o.pretrain_steps, "subnet pretrain (noise)"),
                     o.noise);
    save_slim_net(path, net, {{"stage", "pretrain"}, {"recipe", recipe}});
  });
}

std::string build_ours(const std::string& pretrain, const data::Dataset& train_set,
                       const data::Dataset& val_set, const SubnetBenchOptions& o) {
  const auto recipe = ours_recipe(o, data_name(train_set, val_set));
  return train::cached_file(file_for("subnet-ours", recipe), [&](const std::string& path) {
    SlimNet net = load_slim_net(pretrain).net;
    net->train();
    rank_channels(net);
    SearchOptions so = o.search;
    so.seed = o.seed;
    const SearchResult search = progressive_search(net, train_set, val_set, so);
    MultiTermOptions mo;
    mo.train = base_train(o, o.train_steps, "subnet multi-term");
    mo.distill = o.distill;
    train_multiterm(net, net->subnets(), train_set, mo);
    const ReselectResult chosen = reselect(net, search, train_set, val_set, so);
    calibrate_all(net, train_set.images.slice(0, 0, o.calibration_images), o.batch_size);
    save_slim_net(path, net,
                  {{"stage", "ours"},
                   {"recipe", recipe},
                   {"search", search.to_json()},
                   {"reselect", chosen.to_json()}});
  });
}

int64_t usnet_steps_for(const nlohmann::json& ours_info, const SubnetBenchOptions& o) {
  return o.train_steps + ours_info.at("search").at("finetune_steps").get<int64_t>();
}

std::string build_usnet(const std::string& pretrain, const std::string& ours,
                        const data::Dataset& train_set, const data::Dataset& val_set,
                        const SubnetBenchOptions& o) {
  LoadedSlimNet reference = load_slim_net(ours);
  const int64_t steps = usnet_steps_for(reference.info, o);
  const auto recipe = usnet_recipe(o, data_name(train_set, val_set), steps);
  return train::cached_file(file_for("subnet-usnet", recipe), [&](const std::string& path) {
    SlimNet net = load_slim_net(pretrain).net;
    net->train();
    UsNetOptions uo;
    uo.train = base_train(o, steps, "subnet us-net");
    uo.min_width = o.usnet_min_width;
    uo.random_widths = o.usnet_random_widths;
    uo.distill = o.usnet_distill;
    train_usnet(net, train_set, uo);
    std::vector<SubnetSpec> specs;
    for (const auto& s : reference.net->subnets())
      specs.push_back(uniform_spec_for_macs(*net, reference.net->macs(s), o.usnet_min_width));
    net->set_subnets(specs);
    calibrate_all(net, train_set.images.slice(0, 0, o.calibration_images), o.batch_size);
    save_slim_net(path, net, {{"stage", "usnet"}, {"recipe", recipe}});
  });
}

/// Median latency (ms) of every (net, sub-net) pair at each batch size, timed round-robin so that
/// a load change on the machine hits all of them alike.
std::vector<std::vector<double>> measure_latency(std::vector<std::pair<SlimNet*, int64_t>>& items,
                                                 const torch::Tensor& images,
                                                 const SubnetBenchOptions& o) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<double>> out(items.size());
  ProgressBar bar("subnet latency", static_cast<int64_t>(o.latency_batches.size()));
  for (const int64_t batch : o.latency_batches) {
    const torch::Tensor x = images.slice(0, 0, batch).contiguous();
    std::vector<std::vector<double>> times(items.size());
    for (int64_t rep = -2; rep < o.latency_reps; ++rep) {  // two warm-up rounds
      for (size_t i = 0; i < items.size(); ++i) {
        SlimNet& net = *items[i].first;
        net->set_subnet(items[i].second);
        const Timer timer;
        net->forward(x);
        if (rep >= 0) times[i].push_back(static_cast<double>(timer.elapsed_us()) / 1000.0);
      }
    }
    for (size_t i = 0; i < items.size(); ++i) out[i].push_back(median(times[i]));
    bar.update();
  }
  bar.finish();
  return out;
}

}  // namespace

void SubnetBenchOptions::validate() const {
  net.validate();
  TESSERA_CHECK(train_images >= 0, "subnet bench: train_images must be >= 0");
  TESSERA_CHECK(val_images >= 1, "subnet bench: val_images must be >= 1");
  TESSERA_CHECK(batch_size >= 2, "subnet bench: batch_size must be >= 2, got {}", batch_size);
  TESSERA_CHECK(std::isfinite(lr) && lr > 0, "subnet bench: lr must be > 0, got {}", lr);
  TESSERA_CHECK(pretrain_steps >= 1, "subnet bench: pretrain_steps must be >= 1");
  TESSERA_CHECK(train_steps >= 1, "subnet bench: train_steps must be >= 1");
  noise.validate();
  search.validate();
  TESSERA_CHECK(usnet_min_width > 0 && usnet_min_width <= 1,
                "subnet bench: usnet_min_width {} not in (0, 1]", usnet_min_width);
  TESSERA_CHECK(usnet_random_widths >= 0 && usnet_random_widths <= 16,
                "subnet bench: usnet_random_widths {} not in [0, 16]", usnet_random_widths);
  TESSERA_CHECK(calibration_images >= 2, "subnet bench: calibration_images must be >= 2");
  TESSERA_CHECK(eval_size >= 0, "subnet bench: eval_size must be >= 0");
  TESSERA_CHECK(!latency_batches.empty(), "subnet bench: latency_batches is empty");
  for (const int64_t b : latency_batches)
    TESSERA_CHECK(b >= 1 && b <= 4096, "subnet bench: latency batch {} not in [1, 4096]", b);
  TESSERA_CHECK(latency_reps >= 1, "subnet bench: latency_reps must be >= 1");
  TESSERA_CHECK(switch_reps >= 1, "subnet bench: switch_reps must be >= 1");
}

nlohmann::json SubnetBenchOptions::to_json() const {
  return {{"net", net.to_json()},
          {"train_images", train_images},
          {"val_images", val_images},
          {"batch_size", batch_size},
          {"lr", lr},
          {"pretrain_steps", pretrain_steps},
          {"noise", noise.to_json()},
          {"search", search.to_json()},
          {"train_steps", train_steps},
          {"distill", distill},
          {"usnet_min_width", usnet_min_width},
          {"usnet_random_widths", usnet_random_widths},
          {"usnet_distill", usnet_distill},
          {"calibration_images", calibration_images},
          {"eval_size", eval_size},
          {"latency_batches", latency_batches},
          {"latency_reps", latency_reps},
          {"switch_reps", switch_reps},
          {"seed", seed}};
}

nlohmann::json pretrain_recipe(const SubnetBenchOptions& o, const std::string& data_name) {
  return {{"net", o.net.to_json()},
          {"data", data_name},
          {"batch_size", o.batch_size},
          {"lr", o.lr},
          {"steps", o.pretrain_steps},
          {"noise", o.noise.to_json()},
          {"seed", o.seed}};
}

nlohmann::json ours_recipe(const SubnetBenchOptions& o, const std::string& data_name) {
  nlohmann::json search = o.search.to_json();
  search.erase("seed");  // the bench's seed drives the search
  return {{"pretrain", pretrain_recipe(o, data_name)},
          {"search", search},
          {"train_steps", o.train_steps},
          {"distill", o.distill},
          {"calibration_images", o.calibration_images}};
}

nlohmann::json usnet_recipe(const SubnetBenchOptions& o, const std::string& data_name,
                            int64_t usnet_steps) {
  return {{"ours", ours_recipe(o, data_name)},
          {"steps", usnet_steps},
          {"min_width", o.usnet_min_width},
          {"random_widths", o.usnet_random_widths},
          {"distill", o.usnet_distill}};
}

SubnetModels prepare_models(const data::Dataset& train_set, const data::Dataset& val_set,
                            const SubnetBenchOptions& o, const std::string& up_to) {
  o.validate();
  TESSERA_CHECK(up_to == "pretrain" || up_to == "ours" || up_to == "usnet",
                "subnet: unknown stage '{}' (pretrain, ours, usnet)", up_to);
  TESSERA_CHECK(
      train_set.size() >= o.calibration_images && train_set.size() >= o.search.calibration_images,
      "subnet bench: {} training images, fewer than the calibration images", train_set.size());
  SubnetModels m;
  m.pretrain = build_pretrain(train_set, val_set, o);
  if (up_to == "pretrain") return m;
  m.ours = build_ours(m.pretrain, train_set, val_set, o);
  if (up_to == "ours") return m;
  m.usnet = build_usnet(m.pretrain, m.ours, train_set, val_set, o);
  return m;
}

SubnetBenchResult run_subnet_bench(const data::Dataset& train_set, const data::Dataset& val_set,
                                   const data::Dataset& test_set, const SubnetBenchOptions& o) {
  const SubnetModels files = prepare_models(train_set, val_set, o);
  LoadedSlimNet ours = load_slim_net(files.ours);
  LoadedSlimNet usnet = load_slim_net(files.usnet);
  TESSERA_CHECK(ours.net->n_subnets() == usnet.net->n_subnets(),
                "subnet bench: the US-Net file has {} sub-nets, ours {}", usnet.net->n_subnets(),
                ours.net->n_subnets());
  const data::Dataset eval_set =
      o.eval_size > 0 && o.eval_size < test_set.size() ? test_set.head(o.eval_size) : test_set;
  SubnetBenchResult r;
  r.options = o;
  r.model_description = o.net.describe();
  r.eval_images = eval_set.size();
  r.full_macs = ours.net->macs(ours.net->full_spec());
  r.search = ours.info.at("search");
  r.reselect = ours.info.at("reselect");
  r.finetunes = r.search.at("finetunes").get<int64_t>();
  r.finetune_steps = r.search.at("finetune_steps").get<int64_t>();
  r.usnet_steps = usnet_steps_for(ours.info, o);
  std::vector<std::pair<SlimNet*, int64_t>> items;
  const auto n_stages = o.net.stage_channels.size();
  for (int64_t k = 0; k < ours.net->n_subnets(); ++k) {
    SubnetBenchRow row;
    row.index = k;
    const SubnetSpec& a = ours.net->subnets()[static_cast<size_t>(k)];
    const SubnetSpec& b = usnet.net->subnets()[static_cast<size_t>(k)];
    row.ours_spec = a.describe(static_cast<int64_t>(n_stages), o.net.blocks_per_stage);
    row.usnet_spec = b.describe(static_cast<int64_t>(n_stages), o.net.blocks_per_stage);
    row.ours_macs = ours.net->macs(a);
    row.usnet_macs = usnet.net->macs(b);
    row.ours_accuracy = subnet_accuracy(ours.net, k, eval_set);
    row.usnet_accuracy = subnet_accuracy(usnet.net, k, eval_set);
    log::info("subnet bench: sub-net {}: {:.1f}% MACs, ours {:.2f}%, US-Net {:.2f}%", k,
              100.0 * static_cast<double>(row.ours_macs) / static_cast<double>(r.full_macs),
              100 * row.ours_accuracy, 100 * row.usnet_accuracy);
    r.rows.push_back(row);
    items.emplace_back(&ours.net, k);
    items.emplace_back(&usnet.net, k);
  }
  ours.net->eval();
  usnet.net->eval();
  const auto latency = measure_latency(items, eval_set.images, o);
  for (size_t k = 0; k < r.rows.size(); ++k) {
    r.rows[k].ours_ms = latency[2 * k];
    r.rows[k].usnet_ms = latency[2 * k + 1];
  }
  std::vector<double> switches;
  for (int64_t i = 0; i < o.switch_reps; ++i) {
    const Timer timer;
    ours.net->set_subnet(i % ours.net->n_subnets());
    switches.push_back(static_cast<double>(timer.elapsed_us()));
  }
  r.switch_us = median(switches);
  r.switch_max_us = *std::max_element(switches.begin(), switches.end());
  std::vector<double> reloads;
  for (int i = 0; i < 3; ++i) {
    const Timer timer;
    load_slim_net(files.ours);
    reloads.push_back(static_cast<double>(timer.elapsed_us()) / 1000.0);
  }
  r.reload_ms = median(reloads);
  return r;
}

namespace {
/// The bench's split of the Fashion-MNIST training set: the first images train, the last
/// val_images validate the search.
std::pair<data::Dataset, data::Dataset> fashion_split(const SubnetBenchOptions& o) {
  const auto all = data::load_fashion_mnist("train", o.data_dir, o.net.image_size);
  TESSERA_CHECK(o.val_images < all.size(), "subnet bench: val_images {} >= {} training images",
                o.val_images, all.size());
  const int64_t n_train = o.train_images > 0 ? std::min(o.train_images, all.size() - o.val_images)
                                             : all.size() - o.val_images;
  std::vector<int64_t> val_idx(static_cast<size_t>(o.val_images));
  std::iota(val_idx.begin(), val_idx.end(), all.size() - o.val_images);
  return {all.head(n_train), all.subset(val_idx)};
}
}  // namespace

SubnetModels prepare_models(const SubnetBenchOptions& o, const std::string& up_to) {
  o.validate();
  const auto [train_set, val_set] = fashion_split(o);
  return prepare_models(train_set, val_set, o, up_to);
}

SubnetBenchResult run_subnet_bench(const SubnetBenchOptions& o) {
  o.validate();
  const auto [train_set, val_set] = fashion_split(o);
  const auto test_set = data::load_fashion_mnist("test", o.data_dir, o.net.image_size);
  return run_subnet_bench(train_set, val_set, test_set, o);
}

// ---------------------------------------------------------------------------------------------
// Tables, goals, plot

Table SubnetBenchResult::table() const {
  std::vector<std::string> header = {"#", "MACs % (ours / US-Net)", "MMACs ours"};
  for (const int64_t b : options.latency_batches)
    header.push_back(fmt::format("ms @ {} ours / US-Net", b));
  for (const char* h :
       {"acc % ours", "acc % US-Net", "gain (points)", "ours widths", "US-Net widths"})
    header.emplace_back(h);
  Table t(header);
  const auto full = static_cast<double>(full_macs);
  for (const auto& r : rows) {
    std::vector<std::string> cells = {
        std::to_string(r.index),
        fmt::format("{:.1f} / {:.1f}", 100.0 * static_cast<double>(r.ours_macs) / full,
                    100.0 * static_cast<double>(r.usnet_macs) / full),
        fmt::format("{:.2f}", static_cast<double>(r.ours_macs) / 1e6)};
    for (size_t b = 0; b < r.ours_ms.size(); ++b)
      cells.push_back(fmt::format("{:.3f} / {:.3f}", r.ours_ms[b], r.usnet_ms[b]));
    cells.push_back(percent(r.ours_accuracy));
    cells.push_back(percent(r.usnet_accuracy));
    cells.push_back(fmt::format("{:+.2f}", 100 * r.gain()));
    cells.push_back(r.ours_spec);
    cells.push_back(r.usnet_spec);
    t.add_row(cells);
  }
  return t;
}

Table SubnetBenchResult::goals_table() const {
  Table t({"goal", "measured", "verdict"});
  double sum = 0, worst = 1e9, best = -1e9;
  int64_t at_or_above = 0, n = 0;
  for (const auto& r : rows) {
    if (r.index == 0) continue;  // the full net is the same architecture in both
    ++n;
    sum += r.gain();
    worst = std::min(worst, r.gain());
    best = std::max(best, r.gain());
    at_or_above += r.gain() >= 0 ? 1 : 0;
  }
  if (n > 0) {
    const double mean = sum / static_cast<double>(n);
    t.add_row({"every sub-net >= US-Net at equal FLOPs",
               fmt::format("{}/{} reduced sub-nets at or above; worst gain {:+.2f} points",
                           at_or_above, n, 100 * worst),
               at_or_above == n ? "met" : "missed"});
    t.add_row({"average gain >= 2 points (paper: 2.3 avg, 4.4 max, ImageNet ResNet-18)",
               fmt::format("average {:+.2f}, max {:+.2f} points over {} reduced sub-nets",
                           100 * mean, 100 * best, n),
               mean >= 0.02 ? "met" : "missed"});
  }
  for (size_t b = 0; b < options.latency_batches.size(); ++b) {
    bool falls = true;
    std::string values;
    for (size_t k = 0; k < rows.size(); ++k) {
      values += fmt::format("{}{:.3f}", k == 0 ? "" : " > ", rows[k].ours_ms[b]);
      if (k > 0 && rows[k].ours_ms[b] >= rows[k - 1].ours_ms[b]) falls = false;
    }
    t.add_row({fmt::format("latency falls with FLOPs (batch {})", options.latency_batches[b]),
               values + " ms", falls ? "met" : "missed"});
  }
  t.add_row({"switching costs no reload",
             fmt::format("set_subnet median {:.1f} us (max {:.1f}) vs reloading the file {:.2f} ms",
                         switch_us, switch_max_us, reload_ms),
             switch_us < 1000.0 * reload_ms ? "met" : "missed"});
  return t;
}

std::string SubnetBenchResult::to_string() const {
  return fmt::format(
      "\n{}; full net {:.2f} MMACs; accuracy on {} test images; latency = median of {} forwards "
      "(round-robin)\nsearch: {} fine-tunes, {} steps; multi-term {} steps; US-Net {} steps "
      "(equal budget)\n{}\nGoals\n{}",
      model_description, static_cast<double>(full_macs) / 1e6, eval_images, options.latency_reps,
      finetunes, finetune_steps, options.train_steps, usnet_steps, table().to_string(),
      goals_table().to_string());
}

nlohmann::json SubnetBenchResult::to_json() const {
  nlohmann::json out_rows = nlohmann::json::array();
  for (const auto& r : rows)
    out_rows.push_back({{"index", r.index},
                        {"ours_spec", r.ours_spec},
                        {"usnet_spec", r.usnet_spec},
                        {"ours_macs", r.ours_macs},
                        {"usnet_macs", r.usnet_macs},
                        {"ours_accuracy", r.ours_accuracy},
                        {"usnet_accuracy", r.usnet_accuracy},
                        {"gain", r.gain()},
                        {"ours_ms", r.ours_ms},
                        {"usnet_ms", r.usnet_ms}});
  return {{"model", model_description},
          {"eval_images", eval_images},
          {"full_macs", full_macs},
          {"rows", out_rows},
          {"switch_us", switch_us},
          {"switch_max_us", switch_max_us},
          {"reload_ms", reload_ms},
          {"finetunes", finetunes},
          {"finetune_steps", finetune_steps},
          {"usnet_steps", usnet_steps},
          {"search", search},
          {"reselect", reselect},
          {"table", table().to_json()},
          {"goals", goals_table().to_json()}};
}

SvgPlot SubnetBenchResult::accuracy_flops_plot() const {
  SvgPlot plot("Sub-net accuracy against MACs", "MMACs per image", "test accuracy %");
  SvgSeries ours{"progressive search (ours)", {}, true}, us{"US-Net", {}, true};
  for (const auto& r : rows) {
    ours.points.emplace_back(static_cast<double>(r.ours_macs) / 1e6, 100 * r.ours_accuracy);
    us.points.emplace_back(static_cast<double>(r.usnet_macs) / 1e6, 100 * r.usnet_accuracy);
  }
  plot.add_series(ours);
  plot.add_series(us);
  return plot;
}

// ---------------------------------------------------------------------------------------------
// Reference files and the tour

std::vector<train::ReferenceFile> reference_files() {
  auto split = [](const std::string& data_dir) {
    SubnetBenchOptions o;
    o.data_dir = data_dir;
    return fashion_split(o);
  };
  const SubnetBenchOptions o;
  // The default recipes name the data as run_subnet_bench does on Fashion-MNIST.
  const std::string name =
      fmt::format("fashion-mnist/train ({} train, {} val)", 60000 - o.val_images, o.val_images);
  train::ReferenceFile pre, ours, us;
  pre.name = "subnet-pretrain";
  pre.description = "subnet: ResNet-20-style super-net trained with ranking noise (1200 steps)";
  pre.path = [o, name] {
    return train::cached_file_path(file_for("subnet-pretrain", pretrain_recipe(o, name)));
  };
  pre.build = [split](const std::string& dir) {
    const auto [train_set, val_set] = split(dir);
    build_pretrain(train_set, val_set, SubnetBenchOptions());
  };
  ours.name = "subnet-ours";
  ours.description = "subnet: searched sub-nets, multi-term trained (needs subnet-pretrain)";
  ours.path = [o, name] {
    return train::cached_file_path(file_for("subnet-ours", ours_recipe(o, name)));
  };
  ours.build = [split](const std::string& dir) {
    const auto [train_set, val_set] = split(dir);
    const SubnetBenchOptions d;
    build_ours(build_pretrain(train_set, val_set, d), train_set, val_set, d);
  };
  us.name = "subnet-usnet";
  us.description = "subnet: US-Net baseline, same start and step budget (needs subnet-ours)";
  us.path = [o, name] {
    const std::string ours_path =
        train::cached_file_path(file_for("subnet-ours", ours_recipe(o, name)));
    if (!std::filesystem::exists(ours_path)) return std::string("(after subnet-ours)");
    const int64_t steps = usnet_steps_for(load_slim_net(ours_path).info, o);
    return train::cached_file_path(file_for("subnet-usnet", usnet_recipe(o, name, steps)));
  };
  us.build = [split](const std::string& dir) {
    const auto [train_set, val_set] = split(dir);
    prepare_models(train_set, val_set, SubnetBenchOptions());
  };
  return {pre, ours, us};
}

std::vector<TourRow> tour(const TourContext& context) {
  SubnetBenchOptions o;
  o.data_dir = context.data_dir;
  o.eval_size = 2000;
  o.latency_batches = {64};
  o.latency_reps = 5;
  o.switch_reps = 20;
  const SubnetBenchResult r = run_subnet_bench(o);
  double sum = 0;
  int64_t n = 0;
  for (const auto& row : r.rows)
    if (row.index > 0) sum += row.gain(), ++n;
  const auto& small = r.rows.back();
  return {
      {"subnet: progressive sub-net search vs US-Net (ResNet-20-style, Fashion-MNIST)",
       fmt::format("{} sub-nets; avg gain {:+.2f} points ({} test images); smallest {:.0f}% "
                   "MACs: {}% vs {}%, {:.2f}x faster at batch 64; switch {:.0f} us",
                   r.rows.size(), n > 0 ? 100 * sum / static_cast<double>(n) : 0.0, r.eval_images,
                   100.0 * static_cast<double>(small.ours_macs) / static_cast<double>(r.full_macs),
                   percent(small.ours_accuracy), percent(small.usnet_accuracy),
                   r.rows.front().ours_ms[0] / small.ours_ms[0], r.switch_us),
       "ResNet-18 ImageNet: +2.3 avg, +4.4 max points over US-Net"}};
}

}  // namespace tessera::subnet
