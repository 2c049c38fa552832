// A small JSON reader for bundle manifests: objects, arrays, strings (with \u escapes),
// numbers (as double), booleans and null. Not a general library: no writer, no streaming;
// errors are thrown as lpd::Error(kBundle) with the byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lpd {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  static Json parse(const std::string& text);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }

  // Typed accessors; each throws Error(kBundle) naming `what` when the type is wrong.
  double number(const char* what = "value") const;
  int64_t integer(const char* what = "value") const;  // a number with no fractional part
  bool boolean(const char* what = "value") const;
  const std::string& string(const char* what = "value") const;
  const std::vector<Json>& array(const char* what = "value") const;
  const std::map<std::string, Json>& object(const char* what = "value") const;

  bool has(const std::string& key) const;
  // Member of an object; throws Error(kBundle) when missing.
  const Json& at(const std::string& key) const;
  // Member or nullptr.
  const Json* find(const std::string& key) const;

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> array_;
  std::map<std::string, Json> object_;
};

}  // namespace lpd
