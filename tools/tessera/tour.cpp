// The tour: each system's quick demo on embedded defaults, then one table of
// system | measured here | paper. A failing step is reported in its row and makes the tour exit
// non-zero, but the other steps still run.
#include "tour.h"

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"

namespace tessera::cli {

void add_tour_command(CLI::App& app, Tour& tour) {
  struct Options {
    TourContext context;
    std::vector<std::string> only;
    std::string json;
  };
  auto options = std::make_shared<Options>();
  options->context.work_dir = "tessera-out/tour";
  auto* cmd = app.add_subcommand("tour", "run every system's quick demo and print one table");
  add_data_option(cmd, options->context.data_dir);
  add_seed_option(cmd, options->context.seed);
  cmd->add_option("--work-dir", options->context.work_dir,
                  "where the tour keeps its models and reports")
      ->capture_default_str();
  cmd->add_option("--only", options->only, "run only these steps (comma-separated step names)")
      ->delimiter(',');
  add_json_option(cmd, options->json);

  cmd->callback([options, &tour] {
    const auto& ctx = options->context;
    std::filesystem::create_directories(ctx.work_dir);
    std::vector<std::string> names;
    for (const auto& step : tour.steps()) names.push_back(step.name);
    for (const auto& name : options->only) {
      TESSERA_CHECK(std::find(names.begin(), names.end(), name) != names.end(),
                    "--only: unknown tour step '{}' (steps: {})", name, fmt::join(names, ", "));
    }
    Table table({"system", "measured here", "paper", "seconds"});
    Report report("tour", {{"data", ctx.data_dir}, {"work_dir", ctx.work_dir}}, ctx.seed);
    int failures = 0;
    for (const auto& step : tour.steps()) {
      if (!options->only.empty() &&
          std::find(options->only.begin(), options->only.end(), step.name) == options->only.end())
        continue;
      log::info("tour: {}", step.name);
      Timer timer;
      try {
        const auto rows = step.step(ctx);
        const std::string seconds = fmt::format("{:.0f}", timer.elapsed_s());
        for (const auto& row : rows) table.add_row({row.system, row.measured, row.paper, seconds});
      } catch (const std::exception& e) {
        ++failures;
        table.add_row({step.name, std::string("FAILED: ") + e.what(), "", "-"});
      }
    }
    std::cout << "\n" << table.to_string();
    report.results()["rows"] = table.to_json();
    report.results()["failures"] = failures;
    report.write(options->json);
    TESSERA_CHECK(failures == 0, "{} tour step(s) failed (see the table)", failures);
  });
}

}  // namespace tessera::cli
