// fastensors: a fast, strict engine for safetensors files. Umbrella header.
#pragma once

#include "fastensors/convert.hpp"
#include "fastensors/convert_file.hpp"
#include "fastensors/dtype.hpp"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/checkpoint.hpp"
#include "fastensors/header.hpp"
#include "fastensors/isa.hpp"
#include "fastensors/quant.hpp"
#include "fastensors/read_plan.hpp"
#include "fastensors/sigbus_guard.hpp"
#include "fastensors/version.hpp"
#include "fastensors/writer.hpp"
