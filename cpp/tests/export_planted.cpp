// A library that exports what check_exports.sh must refuse: a JSON-library
// symbol and a private one (beside an fst_ function, so it looks like ours).
extern "C" __attribute__((visibility("default"))) int fst_file_open() { return 0; }
namespace nlohmann {
__attribute__((visibility("default"))) int planted_json_symbol() { return 1; }
}  // namespace nlohmann
namespace fastensors::detail {
__attribute__((visibility("default"))) int planted_private_symbol() { return 2; }
}  // namespace fastensors::detail
