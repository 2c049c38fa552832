// SHA-256 against the FIPS 180-4 / NIST example vectors (including a multi-block message fed in
// uneven pieces), and the manifest JSON reader on valid and broken input.
#include <string>

#include "lpd/json.h"
#include "lpd/sha256.h"
#include "test_util.h"

int main() {
  CHECK(lpd::sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(lpd::sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(lpd::sha256_hex(two.data(), two.size()) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  {
    lpd::Sha256 h;  // one million 'a', in pieces of 7 bytes to cross block boundaries
    const std::string piece(7, 'a');
    size_t done = 0;
    while (done + 7 <= 1000000) { h.update(piece.data(), 7); done += 7; }
    h.update(piece.data(), 1000000 - done);
    CHECK(h.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
  // 55 and 56 bytes: the padding boundary.
  const std::string a55(55, 'a'), a56(56, 'a');
  CHECK(lpd::sha256_hex(a55.data(), 55) == "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(lpd::sha256_hex(a56.data(), 56) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");

  const lpd::Json j = lpd::Json::parse(R"({"a": [1, 2.5, -3e2], "b": {"c": "x\"\u00e9"}, "t": true, "n": null})");
  CHECK(j.at("a").array().size() == 3);
  CHECK(j.at("a").array()[2].number() == -300.0);
  CHECK(j.at("a").array()[0].integer() == 1);
  CHECK(j.at("b").at("c").string() == "x\"\xc3\xa9");
  CHECK(j.at("t").boolean());
  CHECK(j.at("n").is_null());
  CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { (void)j.at("a").array()[1].integer(); }, "fraction as integer"));
  CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { (void)j.at("missing"); }, "missing key"));
  CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { (void)j.at("t").string(); }, "wrong type"));
  for (const char* bad : {"", "{", "{\"a\" 1}", "[1,]x", "{\"a\": tru}", "\"unterminated", "[1 2]"})
    CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { lpd::Json::parse(bad); }, bad));
  return finish("test_sha256_json");
}
