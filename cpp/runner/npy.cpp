#include "npy.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace fairesi {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Epochs are small; a larger header or array means a corrupt file, not real data.
constexpr size_t kMaxHeaderLen = 1 << 20;
constexpr uint64_t kMaxElements = uint64_t{1} << 34;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw InputError("input '" + name + "': " + what);
}

// `text` as it may appear in a one-line message: at most 40 characters, bytes outside
// printable ASCII escaped as \xNN (a corrupt header is arbitrary binary).
std::string printable(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      static const char* hex = "0123456789abcdef";
      out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
    }
  }
  return text.size() > 40 ? out + "..." : out;
}

// Parser of the Python dict literal in a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (306, 500), }
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& name) : s_(text), name_(name) {}

  void parse(std::string& descr, bool& fortran_order, std::vector<int64_t>& shape) {
    bool seen_descr = false, seen_order = false, seen_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        descr = parse_string();
        seen_descr = true;
      } else if (key == "fortran_order") {
        fortran_order = parse_bool();
        seen_order = true;
      } else if (key == "shape") {
        shape = parse_shape();
        seen_shape = true;
      } else {
        fail(name_, "unexpected key '" + printable(key) + "' in the .npy header (expected descr, "
                    "fortran_order, shape)");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') bad("',' or '}'");
    }
    ++pos_;
    skip_space();
    if (pos_ != s_.size()) bad("the end of the header after '}'");
    if (!(seen_descr && seen_order && seen_shape)) {
      fail(name_, "the .npy header lacks one of 'descr', 'fortran_order', 'shape'");
    }
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }

  [[noreturn]] void bad(const std::string& expected) {
    fail(name_, "malformed .npy header at character " + std::to_string(pos_) + ": expected " +
                    expected);
  }

  void expect(char c) {
    skip_space();
    if (peek() != c) bad(std::string("'") + c + "'");
    ++pos_;
  }

  std::string parse_string() {
    skip_space();
    const char quote = peek();
    if (quote != '\'' && quote != '"') bad("a quoted string");
    const size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') bad("a string without escapes");
      ++pos_;
    }
    if (pos_ >= s_.size()) bad("a closing quote");
    return s_.substr(start, pos_++ - start);
  }

  bool parse_bool() {
    skip_space();
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    bad("True or False");
  }

  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(');
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') bad("a non-negative integer dimension");
      uint64_t value = 0;
      while (peek() >= '0' && peek() <= '9') {
        value = value * 10 + static_cast<uint64_t>(peek() - '0');
        if (value > kMaxElements) fail(name_, "a dimension in the .npy header is too large");
        ++pos_;
      }
      shape.push_back(static_cast<int64_t>(value));
      if (shape.size() > 32) fail(name_, "the .npy header has more than 32 dimensions");
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != ')') bad("',' or ')'");
    }
    ++pos_;
    return shape;
  }

  const std::string& s_;
  const std::string& name_;
  size_t pos_ = 0;
};

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return out + (shape.size() == 1 ? ",)" : ")");
}

template <typename Word>
Word load_word(const uint8_t* p, bool swap) {
  Word w;
  std::memcpy(&w, p, sizeof(Word));
  if (swap) {
    if constexpr (sizeof(Word) == 4) w = __builtin_bswap32(w);
    if constexpr (sizeof(Word) == 8) w = __builtin_bswap64(w);
  }
  return w;
}

}  // namespace

NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name) {
  if (size < kMagicLen + 4 || std::memcmp(bytes, kMagic, kMagicLen) != 0) {
    fail(name, "not a .npy file (no \\x93NUMPY magic string)");
  }
  const int major = bytes[6];
  const int minor = bytes[7];
  size_t header_len = 0;
  size_t header_start = 0;
  if (minor != 0) {
    fail(name, ".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " is not supported (expected 1.0, 2.0 or 3.0)");
  } else if (major == 1) {
    header_len = bytes[8] | (size_t{bytes[9]} << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail(name, "truncated .npy header");
    header_len = bytes[8] | (size_t{bytes[9]} << 8) | (size_t{bytes[10]} << 16) |
                 (size_t{bytes[11]} << 24);
    header_start = 12;
  } else {
    fail(name, ".npy format version " + std::to_string(major) +
                   ".0 is not supported (expected 1.0, 2.0 or 3.0)");
  }
  if (header_len > kMaxHeaderLen || header_start + header_len > size) {
    fail(name, "truncated .npy header: it claims " + std::to_string(header_len) +
                   " bytes but the file has " + std::to_string(size - header_start) + " left");
  }
  const std::string header(reinterpret_cast<const char*>(bytes + header_start), header_len);

  std::string descr;
  bool fortran_order = false;
  NpyArray array;
  HeaderParser(header, name).parse(descr, fortran_order, array.shape);

  size_t itemsize = 0;
  if (descr.size() == 3 && descr[1] == 'f' && (descr[2] == '4' || descr[2] == '8') &&
      (descr[0] == '<' || descr[0] == '>' || descr[0] == '=')) {
    itemsize = descr[2] == '4' ? 4 : 8;
  } else {
    fail(name, "data type '" + printable(descr) + "' is not supported; expected float32 or float64 "
                   "('<f4', '>f4', '<f8', '>f8')");
  }
  array.source_dtype = itemsize == 4 ? "float32" : "float64";
  // '=' is native order, which is little-endian on every platform the runner builds for.
  const bool swap = descr[0] == '>';
  if (fortran_order) {
    fail(name, "array is in Fortran order; save it in C order "
               "(numpy.save(path, numpy.ascontiguousarray(x)))");
  }
  if (array.shape.size() < 2 || array.shape.size() > 3) {
    fail(name, "array of shape " + shape_string(array.shape) +
                   " has the wrong number of dimensions; expected (channels, times) or "
                   "(batch, channels, times)");
  }
  uint64_t count = 1;
  for (int64_t dim : array.shape) {
    if (dim == 0) fail(name, "array of shape " + shape_string(array.shape) + " is empty");
    // Checked before multiplying: (2^34, 2^30) would wrap around to 0 in 64 bits.
    if (static_cast<uint64_t>(dim) > kMaxElements / count) {
      fail(name, "array of shape " + shape_string(array.shape) +
                     " is too large (more than 2^34 values)");
    }
    count *= static_cast<uint64_t>(dim);
  }
  const size_t data_start = header_start + header_len;
  const uint64_t expected = count * itemsize;
  const uint64_t present = size - data_start;
  if (present < expected) {
    fail(name, "truncated data: shape " + shape_string(array.shape) + " of " +
                   array.source_dtype + " needs " + std::to_string(expected) +
                   " bytes, the file has " + std::to_string(present));
  }
  if (present > expected) {
    fail(name, std::to_string(present - expected) + " unexpected bytes after the data of shape " +
                   shape_string(array.shape) + " (corrupt file?)");
  }

  array.data.resize(count);
  const uint8_t* src = bytes + data_start;
  for (uint64_t i = 0; i < count; ++i) {
    float value;
    if (itemsize == 4) {
      const uint32_t w = load_word<uint32_t>(src + 4 * i, swap);
      std::memcpy(&value, &w, 4);
    } else {
      const uint64_t w = load_word<uint64_t>(src + 8 * i, swap);
      double wide;
      std::memcpy(&wide, &w, 8);
      value = static_cast<float>(wide);
    }
    array.data[i] = value;
  }
  return array;
}

NpyArray read_npy(const std::string& path) {
  // Only a regular file of bounded size: a directory, a device (/dev/zero) or a pipe would
  // fail obscurely or be read without end.
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (!error && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status)) {
    throw InputError("input '" + path + "': not a regular file (a directory, device or pipe)");
  }
  if (!error && std::filesystem::is_regular_file(status)) {
    const auto size = std::filesystem::file_size(path, error);
    const uint64_t limit = kMaxElements * 8 + kMaxHeaderLen + 64;
    if (!error && size > limit) {
      throw InputError("input '" + path + "': " + std::to_string(size) +
                       " bytes, larger than any array this runner takes");
    }
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw InputError("input '" + path + "': cannot open (" + std::strerror(errno) +
                                ")");
  }
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError("input '" + path + "': read error");
  return parse_npy(bytes.data(), bytes.size(), path);
}

std::string serialise_npy(const float* data, const std::vector<int64_t>& shape) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': " +
                     shape_string(shape) + ", }";
  // Pad with spaces so that the data starts on a 64-byte boundary, ending in '\n'.
  const size_t unpadded = kMagicLen + 4 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kMagic, kMagicLen);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  out += dict;
  size_t count = 1;
  for (int64_t dim : shape) count *= static_cast<size_t>(dim);
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .npy writer assumes little-endian");
  out.append(reinterpret_cast<const char*>(data), count * sizeof(float));
  return out;
}

namespace {
char g_pending_temp[4096] = "";
}

const char* pending_output_temp() { return g_pending_temp; }

void write_npy_atomic(const std::string& path, const float* data,
                      const std::vector<int64_t>& shape) {
  const std::string bytes = serialise_npy(data, shape);
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string temp = (slash == std::string::npos ? std::string() : dir) + "." + base +
                     ".XXXXXX.part";
  if (base.empty()) throw OutputError("output '" + path + "': is a directory name");
  if (temp.size() >= sizeof(g_pending_temp)) {
    throw OutputError("output '" + path + "': path too long");
  }
  const int fd = mkstemps(temp.data(), 5);
  if (fd < 0) {
    throw OutputError("output '" + path + "': cannot create a file in '" + dir + "' (" +
                             std::strerror(errno) + ")");
  }
  std::memcpy(g_pending_temp, temp.c_str(), temp.size() + 1);
  auto give_up = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    g_pending_temp[0] = '\0';
    throw OutputError("output '" + path + "': " + what + " (" + std::strerror(err) + ")");
  };
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      give_up("write failed");
    }
    written += static_cast<size_t>(n);
  }
  // mkstemp creates the file 0600; give it the usual permissions of a new file.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0666 & ~mask) != 0) give_up("cannot set permissions");
  if (::fsync(fd) != 0) give_up("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    g_pending_temp[0] = '\0';
    throw OutputError("output '" + path + "': close failed (" + std::strerror(err) + ")");
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    g_pending_temp[0] = '\0';
    throw OutputError("output '" + path + "': cannot rename the finished file onto it (" +
                             std::strerror(err) + ")");
  }
  g_pending_temp[0] = '\0';
}

}  // namespace fairesi
