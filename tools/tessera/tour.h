// `tessera tour`: runs every registered system's quick demo and prints one closing table.
#pragma once

#include "cli.h"

namespace tessera::cli {

void add_tour_command(CLI::App& app, Tour& tour);

}  // namespace tessera::cli
