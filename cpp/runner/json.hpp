// A small JSON reader for the model metadata (fairesi_metadata.json).
//
// libtorch ships no JSON library; the metadata is a flat object of strings, numbers,
// booleans and arrays, which this strict recursive-descent parser covers (RFC 8259, with
// a nesting limit so that a hostile file cannot exhaust the stack).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace fairesi::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool is(Type t) const { return type_ == t; }

  // Accessors throw std::invalid_argument when the value has another type.
  bool as_bool() const;
  double as_number() const;
  const std::string& as_string() const;
  const std::vector<Value>& as_array() const;
  const std::map<std::string, Value>& as_object() const;

  // Member of an object; throws std::invalid_argument naming `key` when it is absent.
  const Value& at(const std::string& key) const;
  bool contains(const std::string& key) const;

  static Value parse(const std::string& text);

 private:
  friend class Parser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Value> array_;
  std::map<std::string, Value> object_;
};

}  // namespace fairesi::json
