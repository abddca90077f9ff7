// Header parsing. The JSON is read with nlohmann/json's SAX interface and a
// schema-directed handler: no DOM is built, so a header with a million tensors
// costs the tensors' own size, duplicate keys are caught as they stream by,
// and nesting is bounded. The rules are listed in docs/format.md.
#include <algorithm>
#include <cstring>
#include <string>
#include <functional>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "fastensors/error.hpp"
#include "fastensors/header.hpp"
#include "format/checked_math_internal.h"

namespace fastensors {

std::uint64_t TensorInfo::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

bool NameIndex::insert(const std::vector<TensorInfo>& tensors, std::size_t i) {
  if ((size_ + 1) * 2 > slots_.size()) grow(tensors);
  const std::uint64_t h = std::hash<std::string_view>{}(tensors[i].name);
  const std::uint64_t tag = h >> 32;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t at = static_cast<std::size_t>(h) & mask;; at = (at + 1) & mask) {
    const std::uint64_t slot = slots_[at];
    if (slot == 0) {
      slots_[at] = (tag << 32) | (static_cast<std::uint64_t>(i) + 1);
      ++size_;
      return true;
    }
    if ((slot >> 32) == tag && tensors[(slot & 0xffffffffu) - 1].name == tensors[i].name) return false;
  }
}

std::size_t NameIndex::find(const std::vector<TensorInfo>& tensors, std::string_view name) const noexcept {
  if (slots_.empty()) return npos;
  const std::uint64_t h = std::hash<std::string_view>{}(name);
  const std::uint64_t tag = h >> 32;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t at = static_cast<std::size_t>(h) & mask;; at = (at + 1) & mask) {
    const std::uint64_t slot = slots_[at];
    if (slot == 0) return npos;
    if ((slot >> 32) == tag && tensors[(slot & 0xffffffffu) - 1].name == name) return (slot & 0xffffffffu) - 1;
  }
}

bool NameIndex::rebuild(const std::vector<TensorInfo>& tensors) {
  std::size_t cap = 16;
  while (cap < tensors.size() * 2 + 1) cap *= 2;
  slots_.assign(cap, 0);
  size_ = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!insert(tensors, i)) return false;
  }
  return true;
}

void NameIndex::grow(const std::vector<TensorInfo>& tensors) {
  std::vector<std::uint64_t> old = std::move(slots_);
  slots_.assign(old.empty() ? 16 : old.size() * 2, 0);
  const std::size_t mask = slots_.size() - 1;
  for (std::uint64_t slot : old) {
    if (slot == 0) continue;
    const std::uint64_t h = std::hash<std::string_view>{}(tensors[(slot & 0xffffffffu) - 1].name);
    std::size_t at = static_cast<std::size_t>(h) & mask;
    while (slots_[at] != 0) at = (at + 1) & mask;
    slots_[at] = slot;
  }
}

const TensorInfo* Header::find(std::string_view name) const noexcept {
  const std::size_t i = index.find(tensors, name);
  return i == NameIndex::npos ? nullptr : &tensors[i];
}

const TensorInfo& Header::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw Error(ErrorCode::TensorNotFound, "no tensor named '" + std::string(name) + "'");
}

std::vector<std::string> Header::sorted_keys() const {
  std::vector<std::string> keys;
  keys.reserve(tensors.size());
  for (const auto& t : tensors) keys.push_back(t.name);
  std::sort(keys.begin(), keys.end());
  return keys;
}

namespace {

// Validates UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
// Returns the offset of the first bad byte, or size when valid.
std::size_t find_invalid_utf8(const std::uint8_t* s, std::size_t size) noexcept {
  std::size_t i = 0;
  while (i < size) {
    // ASCII fast path, eight bytes at a time.
    while (i + 8 <= size) {
      std::uint64_t word;
      std::memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= size) break;
    std::uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return i;
    }
    if (i + len > size) return i;
    for (std::size_t k = 1; k < len; ++k) {
      std::uint8_t cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    static constexpr std::uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return size;
}

using json = nlohmann::json;

// What the handler expects next. The header schema is:
//   { "__metadata__": null | { str: str, ... },
//     name: { "dtype": str, "shape": [uint, ...], "data_offsets": [uint, uint], other: any } }
enum class State {
  Root,          // expecting the root object
  RootKey,       // inside the root, expecting a key or its end
  MetaValue,     // after "__metadata__": null or an object
  MetaKey,       // inside metadata: a key or the end
  MetaString,    // a metadata value: must be a string
  TensorValue,   // after a tensor name: an object
  FieldKey,      // inside a tensor object: a field or the end
  DtypeValue,    // "dtype": a string
  ShapeStart,    // "shape": an array
  ShapeItem,     // inside shape: integers or the end
  OffsetsStart,  // "data_offsets": an array
  OffsetsItem,   // inside data_offsets
  Skip,          // skipping an unknown field's value (any JSON)
  Done,
};

class HeaderHandler {
 public:

  Header header;
  bool failed = false;
  ErrorCode error_code = ErrorCode::InvalidHeader;
  std::string error_message;
  std::string error_tensor;

  // --- SAX interface -------------------------------------------------------
  bool null() {
    if (state_ == State::Skip) return skip_scalar();
    if (state_ == State::MetaValue) {  // "__metadata__": null is accepted
      state_ = State::RootKey;
      return true;
    }
    return unexpected("null");
  }
  bool boolean(bool) {
    if (state_ == State::Skip) return skip_scalar();
    return unexpected("a boolean");
  }
  bool number_integer(json::number_integer_t v) {
    if (state_ == State::Skip) return skip_scalar();
    // nlohmann reports non-negative literals through number_unsigned; this one
    // had a minus sign, so "-0" is rejected too (the reference reads it as a float).
    return bad_number("a negative number " + (v == 0 ? std::string("-0") : std::to_string(v)));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    switch (state_) {
      case State::Skip: return skip_scalar();
      case State::ShapeItem:
        current_.shape.push_back(v);
        return true;
      case State::OffsetsItem:
        if (offsets_seen_ >= 2) {
          return fail(ErrorCode::InvalidOffsets, "data_offsets must hold exactly 2 integers",
                      current_.name);
        }
        (offsets_seen_ == 0 ? current_.begin : current_.end) = v;
        ++offsets_seen_;
        return true;
      default: return unexpected("a number");
    }
  }
  bool number_float(json::number_float_t, const std::string& text) {
    if (state_ == State::Skip) return skip_scalar();
    return bad_number("a non-integer number " + text);
  }
  bool string(std::string& s) {
    switch (state_) {
      case State::Skip: return skip_scalar();
      case State::MetaString:
        header.metadata.back().second = std::move(s);
        state_ = State::MetaKey;
        return true;
      case State::DtypeValue: {
        auto dt = parse_dtype(s);
        if (!dt) {
          return fail(ErrorCode::UnknownDtype, "unknown dtype '" + s + "'", current_.name);
        }
        current_.dtype = *dt;
        state_ = State::FieldKey;
        return true;
      }
      default: return unexpected("a string");
    }
  }
  bool binary(json::binary_t&) { return unexpected("binary data"); }

  bool start_object(std::size_t) {
    if (!enter()) return false;
    switch (state_) {
      case State::Root: state_ = State::RootKey; return true;
      case State::MetaValue:
        if (header.has_metadata) {
          return fail(ErrorCode::DuplicateKey, "'__metadata__' appears twice");
        }
        header.has_metadata = true;
        state_ = State::MetaKey;
        return true;
      case State::TensorValue:
        current_fields_ = 0;
        state_ = State::FieldKey;
        return true;
      case State::Skip: ++skip_depth_; return true;
      default: return unexpected("an object");
    }
  }
  bool key(std::string& k) {
    switch (state_) {
      case State::RootKey:
        if (k == "__metadata__") {
          if (seen_metadata_key_) return fail(ErrorCode::DuplicateKey, "'__metadata__' appears twice");
          seen_metadata_key_ = true;
          state_ = State::MetaValue;
          return true;
        }
        if (header.index.find(header.tensors, k) != NameIndex::npos) {
          return fail(ErrorCode::DuplicateKey, "tensor name appears twice", k);
        }
        current_ = TensorInfo{};
        current_.name = std::move(k);
        state_ = State::TensorValue;
        return true;
      case State::MetaKey:
        if (!meta_keys_.insert(k).second) {
          return fail(ErrorCode::DuplicateKey, "metadata key '" + k + "' appears twice");
        }
        header.metadata.emplace_back(std::move(k), std::string());
        state_ = State::MetaString;
        return true;
      case State::FieldKey: return field(k);
      case State::Skip: return true;
      default: return unexpected("a key");
    }
  }
  bool end_object() {
    --depth_;
    switch (state_) {
      case State::RootKey: state_ = State::Done; return true;
      case State::MetaKey: state_ = State::RootKey; return true;
      case State::FieldKey: return finish_tensor();
      case State::Skip: return leave_skip();
      default: return unexpected("the end of an object");
    }
  }
  bool start_array(std::size_t) {
    if (!enter()) return false;
    switch (state_) {
      case State::ShapeStart: state_ = State::ShapeItem; return true;
      case State::OffsetsStart:
        offsets_seen_ = 0;
        state_ = State::OffsetsItem;
        return true;
      case State::Skip: ++skip_depth_; return true;
      default: return unexpected("an array");
    }
  }
  bool end_array() {
    --depth_;
    switch (state_) {
      case State::ShapeItem: state_ = State::FieldKey; return true;
      case State::OffsetsItem:
        if (offsets_seen_ != 2) {
          return fail(ErrorCode::InvalidOffsets, "data_offsets must hold exactly 2 integers",
                      current_.name);
        }
        state_ = State::FieldKey;
        return true;
      case State::Skip: return leave_skip();
      default: return unexpected("the end of an array");
    }
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    if (!failed) {
      // nlohmann's message already says where; keep its words, drop its prefix.
      std::string what = ex.what();
      auto pos = what.find("] ");
      if (pos != std::string::npos) what = what.substr(pos + 2);
      // Its "last read" excerpt may end inside a multi-byte character: keep
      // the message valid UTF-8 by writing non-ASCII bytes as <0xNN>.
      std::string clean;
      clean.reserve(what.size());
      for (char ch : what) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x80) {
          clean += ch;
        } else {
          static constexpr char kHex[] = "0123456789ABCDEF";
          clean += "<0x";
          clean += kHex[c >> 4];
          clean += kHex[c & 0xF];
          clean += '>';
        }
      }
      fail(ErrorCode::InvalidJson, "at byte " + std::to_string(position) + ": " + clean);
    }
    return false;
  }

 private:
  static constexpr unsigned kDtype = 1, kShape = 2, kOffsets = 4;

  bool enter() {
    // Like the reference's parser (serde_json), which fails on reaching its
    // 128th nested array/object: at most kMaxJsonDepth - 1 levels are accepted.
    if (++depth_ >= kMaxJsonDepth) {
      return fail(ErrorCode::NestingTooDeep,
                  "JSON nested " + std::to_string(kMaxJsonDepth) + " or more levels deep");
    }
    return true;
  }

  bool field(std::string& k) {
    unsigned bit = 0;
    State next = State::Skip;
    if (k == "dtype") {
      bit = kDtype;
      next = State::DtypeValue;
    } else if (k == "shape") {
      bit = kShape;
      next = State::ShapeStart;
    } else if (k == "data_offsets") {
      bit = kOffsets;
      next = State::OffsetsStart;
    }
    if (bit != 0) {
      if (current_fields_ & bit) {
        return fail(ErrorCode::DuplicateKey, "field '" + k + "' appears twice", current_.name);
      }
      current_fields_ |= bit;
    } else {
      // Unknown fields are ignored, as the reference does.
      skip_depth_ = 0;
    }
    state_ = next;
    return true;
  }

  bool skip_scalar() {
    if (skip_depth_ == 0) state_ = State::FieldKey;
    return true;
  }
  bool leave_skip() {
    if (--skip_depth_ == 0) state_ = State::FieldKey;
    return true;
  }

  bool finish_tensor() {
    if (current_fields_ != (kDtype | kShape | kOffsets)) {
      const char* missing = !(current_fields_ & kDtype)   ? "dtype"
                            : !(current_fields_ & kShape) ? "shape"
                                                          : "data_offsets";
      return fail(ErrorCode::InvalidHeader, std::string("missing field '") + missing + "'",
                  current_.name);
    }
    header.tensors.push_back(std::move(current_));
    header.index.insert(header.tensors, header.tensors.size() - 1);  // the name was checked at its key
    state_ = State::RootKey;
    return true;
  }

  bool bad_number(const std::string& what) {
    if (state_ == State::ShapeItem) {
      return fail(ErrorCode::InvalidShape, "shape holds " + what + "; dimensions are non-negative integers",
                  current_.name);
    }
    if (state_ == State::OffsetsItem) {
      return fail(ErrorCode::InvalidOffsets,
                  "data_offsets holds " + what + "; offsets are non-negative integers", current_.name);
    }
    return unexpected(what);
  }

  bool unexpected(const std::string& what) {
    switch (state_) {
      case State::Root: return fail(ErrorCode::InvalidHeader, "the header must be a JSON object, found " + what);
      case State::MetaValue:
      case State::MetaString:
        return fail(ErrorCode::InvalidMetadata,
                    "__metadata__ must be an object of string values, found " + what);
      case State::TensorValue:
        return fail(ErrorCode::InvalidHeader, "a tensor entry must be an object, found " + what,
                    current_.name);
      case State::DtypeValue:
        return fail(ErrorCode::UnknownDtype, "dtype must be a string, found " + what, current_.name);
      case State::ShapeStart:
      case State::ShapeItem:
        return fail(ErrorCode::InvalidShape, "shape must be an array of integers, found " + what,
                    current_.name);
      case State::OffsetsStart:
      case State::OffsetsItem:
        return fail(ErrorCode::InvalidOffsets, "data_offsets must be an array of 2 integers, found " + what,
                    current_.name);
      default: return fail(ErrorCode::InvalidHeader, "unexpected " + what);
    }
  }

  bool fail(ErrorCode code, std::string message, std::string tensor = {}) {
    if (!failed) {
      failed = true;
      error_code = code;
      error_message = std::move(message);
      error_tensor = std::move(tensor);
    }
    return false;
  }

  State state_ = State::Root;
  std::size_t depth_ = 0;
  std::size_t skip_depth_ = 0;
  TensorInfo current_;
  unsigned current_fields_ = 0;
  int offsets_seen_ = 0;
  bool seen_metadata_key_ = false;
  std::unordered_set<std::string> meta_keys_;
};

// The reference's validation, on tensors sorted by offsets: contiguous from 0,
// sizes equal to dtype bits x elements / 8, and nothing after the last one.
void validate(Header& h, std::uint64_t file_size, const std::string& path) {
  const auto by_offsets = [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  };
  // Writers (ours and the reference) list tensors in offset order: then
  // there is nothing to sort, and the index built while parsing holds.
  if (!std::is_sorted(h.tensors.begin(), h.tensors.end(), by_offsets)) {
    std::stable_sort(h.tensors.begin(), h.tensors.end(), by_offsets);
    h.index.rebuild(h.tensors);
  }
  std::uint64_t cursor = 0;
  for (const auto& t : h.tensors) {
    if (t.end < t.begin) {
      throw Error(ErrorCode::OffsetsBackwards,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] end before they begin",
                  path, t.name);
    }
    if (t.begin > cursor) {
      throw Error(ErrorCode::OffsetsGap,
                  "starts at byte " + std::to_string(t.begin) + " leaving a hole after byte " + std::to_string(cursor) +
                      (cursor == 0 ? " (the first tensor must start at 0)" : ""),
                  path, t.name);
    }
    if (t.begin < cursor) {
      throw Error(ErrorCode::OffsetsOverlap,
                  "starts at byte " + std::to_string(t.begin) + " before the previous tensor ends at " +
                      std::to_string(cursor),
                  path, t.name);
    }
    cursor = t.end;
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (detail::mul_overflows(numel, d, &numel)) {
        throw Error(ErrorCode::Overflow, "the number of elements overflows 64 bits", path, t.name);
      }
    }
    std::uint64_t bits;
    if (detail::mul_overflows(numel, dtype_bits(t.dtype), &bits)) {
      throw Error(ErrorCode::Overflow, "the size in bits overflows 64 bits", path, t.name);
    }
    if (bits % 8 != 0) {
      throw Error(ErrorCode::MisalignedSubByte,
                  std::to_string(numel) + " elements of " + std::string(dtype_name(t.dtype)) +
                      " do not end on a byte boundary",
                  path, t.name);
    }
    if (bits / 8 != t.nbytes()) {
      throw Error(ErrorCode::SizeMismatch,
                  "shape and dtype need " + std::to_string(bits / 8) + " bytes but data_offsets span " +
                      std::to_string(t.nbytes()),
                  path, t.name);
    }
  }
  h.data_size = cursor;
  std::uint64_t expected;
  if (detail::add_overflows(h.data_start, cursor, &expected) || expected > file_size) {
    throw Error(ErrorCode::TruncatedData,
                "tensors need " + std::to_string(cursor) + " data bytes but the file has only " +
                    std::to_string(file_size - h.data_start),
                path, h.tensors.empty() ? std::string() : h.tensors.back().name);
  }
  if (expected < file_size) {
    throw Error(ErrorCode::TrailingBytes,
                std::to_string(file_size - expected) + " bytes follow the last tensor", path);
  }
}

}  // namespace

std::uint64_t parse_header_length(const std::uint8_t* first8, std::uint64_t available,
                                  std::uint64_t file_size, const std::string& path) {
  if (available < 8 || file_size < 8) {
    throw Error(ErrorCode::HeaderTooSmall,
                "the file has " + std::to_string(file_size) + " bytes, fewer than the 8-byte header length",
                path);
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];  // little-endian on any host
  if (n > kMaxHeaderSize) {
    throw Error(ErrorCode::HeaderTooLarge,
                "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderSize),
                path);
  }
  if (n > file_size - 8) {
    throw Error(ErrorCode::InvalidHeaderLength,
                "header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(file_size) + " bytes)",
                path);
  }
  return n;
}

Header parse_header(const std::uint8_t* json_bytes, std::uint64_t header_size, std::uint64_t file_size,
                    const std::string& path) {
  auto bad = find_invalid_utf8(json_bytes, header_size);
  if (bad != header_size) {
    throw Error(ErrorCode::InvalidUtf8, "header is not valid UTF-8 at byte " + std::to_string(bad), path);
  }
  // nlohmann skips a leading byte-order mark; JSON (and the reference) do not.
  if (header_size >= 3 && json_bytes[0] == 0xEF && json_bytes[1] == 0xBB && json_bytes[2] == 0xBF) {
    throw Error(ErrorCode::InvalidJson, "header starts with a byte-order mark", path);
  }
  // A raw NUL is never valid JSON, but nlohmann's lexer reads it as the end of
  // input, which would accept "{}" followed by NUL padding.
  // (An empty header may come with a null pointer, which memchr must not see.)
  if (const void* nul = header_size ? std::memchr(json_bytes, 0, header_size) : nullptr) {
    throw Error(ErrorCode::InvalidJson,
                "header contains a NUL byte at byte " +
                    std::to_string(static_cast<const std::uint8_t*>(nul) - json_bytes),
                path);
  }
  HeaderHandler handler;
  const char* first = reinterpret_cast<const char*>(json_bytes);
  bool ok = json::sax_parse(first, first + header_size, &handler, json::input_format_t::json, true);
  if (!ok || handler.failed) {
    if (!handler.failed) throw Error(ErrorCode::InvalidJson, "header is not valid JSON", path);
    throw Error(handler.error_code, handler.error_message, path, handler.error_tensor);
  }
  Header h = std::move(handler.header);
  h.header_size = header_size;
  h.data_start = 8 + header_size;
  validate(h, file_size, path);
  return h;
}

Header parse_buffer(const std::uint8_t* data, std::uint64_t size, const std::string& label) {
  std::uint64_t n = parse_header_length(data, size, size, label);
  return parse_header(data + 8, n, size, label);
}

}  // namespace fastensors
