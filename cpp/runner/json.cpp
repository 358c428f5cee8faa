#include "json.hpp"

#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace fairesi::json {

namespace {
const char* type_name(Value::Type t) {
  switch (t) {
    case Value::Type::Null: return "null";
    case Value::Type::Bool: return "a boolean";
    case Value::Type::Number: return "a number";
    case Value::Type::String: return "a string";
    case Value::Type::Array: return "an array";
    case Value::Type::Object: return "an object";
  }
  return "?";
}

[[noreturn]] void wrong_type(Value::Type have, const char* want) {
  throw std::invalid_argument(std::string("JSON value is ") + type_name(have) + ", expected " +
                              want);
}
}  // namespace

bool Value::as_bool() const {
  if (type_ != Type::Bool) wrong_type(type_, "a boolean");
  return bool_;
}
double Value::as_number() const {
  if (type_ != Type::Number) wrong_type(type_, "a number");
  return number_;
}
const std::string& Value::as_string() const {
  if (type_ != Type::String) wrong_type(type_, "a string");
  return string_;
}
const std::vector<Value>& Value::as_array() const {
  if (type_ != Type::Array) wrong_type(type_, "an array");
  return array_;
}
const std::map<std::string, Value>& Value::as_object() const {
  if (type_ != Type::Object) wrong_type(type_, "an object");
  return object_;
}
bool Value::contains(const std::string& key) const {
  return type_ == Type::Object && object_.count(key) > 0;
}
const Value& Value::at(const std::string& key) const {
  const auto& object = as_object();
  const auto it = object.find(key);
  if (it == object.end()) throw std::invalid_argument("JSON object has no key '" + key + "'");
  return it->second;
}

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value parse_document() {
    Value value = parse_value(0);
    skip_space();
    if (pos_ != s_.size()) bad("end of input");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void bad(const std::string& expected) {
    throw std::invalid_argument("malformed JSON at byte " + std::to_string(pos_) + ": expected " +
                                expected);
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool consume(const char* word) {
    const std::string w(word);
    if (s_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) bad("less deeply nested values");
    skip_space();
    Value v;
    const char c = peek();
    if (c == '{') {
      v.type_ = Value::Type::Object;
      ++pos_;
      skip_space();
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      while (true) {
        skip_space();
        if (peek() != '"') bad("a string key");
        std::string key = parse_string();
        skip_space();
        if (peek() != ':') bad("':'");
        ++pos_;
        v.object_[key] = parse_value(depth + 1);
        skip_space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        if (peek() == '}') {
          ++pos_;
          return v;
        }
        bad("',' or '}'");
      }
    }
    if (c == '[') {
      v.type_ = Value::Type::Array;
      ++pos_;
      skip_space();
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.array_.push_back(parse_value(depth + 1));
        skip_space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        if (peek() == ']') {
          ++pos_;
          return v;
        }
        bad("',' or ']'");
      }
    }
    if (c == '"') {
      v.type_ = Value::Type::String;
      v.string_ = parse_string();
      return v;
    }
    if (consume("true")) {
      v.type_ = Value::Type::Bool;
      v.bool_ = true;
      return v;
    }
    if (consume("false")) {
      v.type_ = Value::Type::Bool;
      return v;
    }
    if (consume("null")) return v;
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.type_ = Value::Type::Number;
      v.number_ = parse_number();
      return v;
    }
    bad("a JSON value");
  }

  double parse_number() {
    const size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() < '0' || peek() > '9') bad("a digit");
    while (peek() >= '0' && peek() <= '9') ++pos_;
    if (peek() == '.') {
      ++pos_;
      if (peek() < '0' || peek() > '9') bad("a digit after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (peek() < '0' || peek() > '9') bad("an exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    const std::string token = s_.substr(start, pos_ - start);
    errno = 0;
    const double value = std::strtod(token.c_str(), nullptr);
    if (errno == ERANGE) bad("a number within the double range");
    return value;
  }

  unsigned parse_hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = peek();
      code <<= 4;
      if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
      else bad("four hex digits after \\u");
      ++pos_;
    }
    return code;
  }

  void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (code >> 6)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (code >> 12)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (code >> 18)));
      out.push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) bad("a closing '\"'");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) bad("no control characters in strings");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00) {
            if (!consume("\\u")) bad("a low surrogate");
            const unsigned low = parse_hex4();
            if (low < 0xDC00 || low >= 0xE000) bad("a low surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code < 0xE000) {
            bad("a high surrogate before a low one");
          }
          append_utf8(out, code);
          break;
        }
        default: --pos_; bad("a valid escape");
      }
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

Value Value::parse(const std::string& text) { return Parser(text).parse_document(); }

}  // namespace fairesi::json
