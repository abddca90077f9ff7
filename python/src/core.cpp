// fastensors._core: the module definition. Each area binds itself from its
// own file (bind_*.cpp); shared helpers are in bind_common.h.
#include "bind_common.h"

namespace fp = fastensors_py;

NB_MODULE(_core, m) {
  m.doc() = "fastensors C++ core (private: import fastensors instead)";
  m.attr("__version__") = FASTENSORS_VERSION;
  m.attr("MAX_HEADER_SIZE") = fastensors::kMaxHeaderSize;

  fp::init_errors(m);
  fp::init_dtypes(m);
  fp::init_file(m);
  fp::init_writer(m);
  fp::init_convert(m);
  fp::init_quant(m);
  fp::init_read(m);
  fp::init_checkpoint(m);
}
