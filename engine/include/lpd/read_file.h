// Whole-file reads for the bundle loaders (manifest, weights, schedules): a file that cannot be
// opened or read is a bundle error naming it.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "lpd/errors.h"

namespace lpd {

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(ErrorKind::kBundle, "cannot open " + path);
  const std::streamsize size = f.tellg();
  f.seekg(0);
  std::vector<uint8_t> out(static_cast<size_t>(size));
  if (size > 0 && !f.read(reinterpret_cast<char*>(out.data()), size)) fail(ErrorKind::kBundle, "cannot read " + path);
  return out;
}

}  // namespace lpd
