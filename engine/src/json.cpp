// Recursive-descent JSON reader for manifests and safetensors headers (lpd/json.h).
#include "lpd/json.h"

#include <cmath>
#include <cstdlib>

#include "lpd/errors.h"
#include "utf8.h"

namespace lpd {

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}

  Json parse_document() {
    Json v = value(0);
    skip_ws();
    if (pos_ != s_.size()) error("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void error(const std::string& what) const {
    fail(ErrorKind::kBundle, "invalid JSON at byte " + std::to_string(pos_) + ": " + what);
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  char peek() {
    skip_ws();
    if (pos_ >= s_.size()) error("unexpected end");
    return s_[pos_];
  }
  void expect(const char* word) {
    for (const char* p = word; *p; ++p, ++pos_)
      if (pos_ >= s_.size() || s_[pos_] != *p) error(std::string("expected ") + word);
  }

  Json value(int depth) {
    if (depth > 64) error("nesting too deep");
    Json v;
    const char c = peek();
    if (c == '{') {
      v.type_ = Json::Type::kObject;
      ++pos_;
      if (peek() == '}') { ++pos_; return v; }
      for (;;) {
        if (peek() != '"') error("expected a key");
        std::string key = string_body();
        if (peek() != ':') error("expected ':'");
        ++pos_;
        v.object_[key] = value(depth + 1);
        const char d = peek();
        ++pos_;
        if (d == '}') break;
        if (d != ',') error("expected ',' or '}'");
      }
    } else if (c == '[') {
      v.type_ = Json::Type::kArray;
      ++pos_;
      if (peek() == ']') { ++pos_; return v; }
      for (;;) {
        v.array_.push_back(value(depth + 1));
        const char d = peek();
        ++pos_;
        if (d == ']') break;
        if (d != ',') error("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.type_ = Json::Type::kString;
      v.string_ = string_body();
    } else if (c == 't') {
      expect("true");
      v.type_ = Json::Type::kBool;
      v.bool_ = true;
    } else if (c == 'f') {
      expect("false");
      v.type_ = Json::Type::kBool;
    } else if (c == 'n') {
      expect("null");
    } else if (c == 'N') {  // Python's json.dumps writes NaN / Infinity unless told not to
      expect("NaN");
      v.type_ = Json::Type::kNumber;
      v.number_ = NAN;
    } else {
      v.type_ = Json::Type::kNumber;
      v.number_ = number_body();
    }
    return v;
  }

  double number_body() {
    const size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (s_.compare(pos_, 8, "Infinity") == 0) {
      pos_ += 8;
      return s_[start] == '-' ? -INFINITY : INFINITY;
    }
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '.' ||
                                s_[pos_] == 'e' || s_[pos_] == 'E' || s_[pos_] == '+' || s_[pos_] == '-'))
      ++pos_;
    if (pos_ == start) error("unexpected character");
    const std::string text = s_.substr(start, pos_ - start);
    char* end = nullptr;
    const double d = std::strtod(text.c_str(), &end);
    if (end != text.c_str() + text.size()) error("bad number '" + text + "'");
    return d;
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) error("short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else error("bad \\u escape");
    }
    return v;
  }

  std::string string_body() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) error("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) error("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {
            pos_ += 2;
            const uint32_t lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: error("bad escape");
      }
    }
  }
};

Json Json::parse(const std::string& text) { return JsonParser(text).parse_document(); }

static const char* type_name(Json::Type t) {
  switch (t) {
    case Json::Type::kNull: return "null";
    case Json::Type::kBool: return "a boolean";
    case Json::Type::kNumber: return "a number";
    case Json::Type::kString: return "a string";
    case Json::Type::kArray: return "an array";
    case Json::Type::kObject: return "an object";
  }
  return "?";
}

#define LPD_JSON_EXPECT(T, name)                                                                        \
  if (type_ != T) fail(ErrorKind::kBundle, std::string(what) + " must be " name ", got " + type_name(type_))

double Json::number(const char* what) const {
  LPD_JSON_EXPECT(Type::kNumber, "a number");
  return number_;
}
int64_t Json::integer(const char* what) const {
  LPD_JSON_EXPECT(Type::kNumber, "an integer");
  if (!(std::fabs(number_) < 9.007199254740992e15) || std::floor(number_) != number_)
    fail(ErrorKind::kBundle, std::string(what) + " must be an integer");
  return static_cast<int64_t>(number_);
}
bool Json::boolean(const char* what) const {
  LPD_JSON_EXPECT(Type::kBool, "a boolean");
  return bool_;
}
const std::string& Json::string(const char* what) const {
  LPD_JSON_EXPECT(Type::kString, "a string");
  return string_;
}
const std::vector<Json>& Json::array(const char* what) const {
  LPD_JSON_EXPECT(Type::kArray, "an array");
  return array_;
}
const std::map<std::string, Json>& Json::object(const char* what) const {
  LPD_JSON_EXPECT(Type::kObject, "an object");
  return object_;
}
bool Json::has(const std::string& key) const { return find(key) != nullptr; }
const Json* Json::find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &it->second;
}
const Json& Json::at(const std::string& key) const {
  const Json* v = find(key);
  if (!v) fail(ErrorKind::kBundle, "missing key '" + key + "'");
  return *v;
}

}  // namespace lpd
