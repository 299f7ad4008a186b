#include "transport/auth.h"

#include <sodium.h>
#include <sys/random.h>

#include <cstring>
#include <string>

namespace pdm::auth {

namespace {
// libsodium must be initialised once before use; it is idempotent and
// thread-safe.
const int kSodiumInit = sodium_init();

void FillRandom(uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = getrandom(p + done, n - done, 0);
    if (r > 0) done += static_cast<size_t>(r);
  }
}
}  // namespace

Nonce RandomNonce() {
  Nonce n;
  FillRandom(n.data(), n.size());
  return n;
}

JobSecret NewJobSecret() {
  JobSecret s;
  FillRandom(s.data(), s.size());
  return s;
}

Tag MakeTag(const JobSecret& secret, char role, const Nonce& nonce, int32_t rank) {
  // MAC over (role, nonce, rank) keyed with the secret. The role byte keeps a
  // connector's proof from being replayed as an acceptor's and vice versa.
  uint8_t msg[1 + sizeof(Nonce) + sizeof(int32_t)];
  msg[0] = static_cast<uint8_t>(role);
  std::memcpy(msg + 1, nonce.data(), nonce.size());
  std::memcpy(msg + 1 + nonce.size(), &rank, sizeof(rank));
  (void)kSodiumInit;
  Tag t;
  crypto_generichash(t.data(), t.size(), msg, sizeof(msg), secret.data(), secret.size());
  return t;
}

bool TagEquals(const Tag& a, const Tag& b) { return sodium_memcmp(a.data(), b.data(), a.size()) == 0; }

Challenge MakeChallenge() { return Challenge{kMagic, kVersion, RandomNonce()}; }

Hello MakeHello(const JobSecret& secret, const Challenge& ch, int32_t my_rank) {
  Hello h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.rank = my_rank;
  h.nonce = RandomNonce();
  h.tag = MakeTag(secret, 'C', ch.nonce, my_rank);
  return h;
}

Result<int> VerifyHello(const JobSecret& secret, const Challenge& ch, const Hello& h, int size) {
  if (h.magic != kMagic) return InvalidArgument("handshake: bad magic", EBADMSG);
  if (h.version != kVersion)
    return InvalidArgument("handshake: protocol version " + std::to_string(h.version) + " not supported", EPROTO);
  if (h.rank < 0 || h.rank >= size)
    return InvalidArgument("handshake: rank " + std::to_string(h.rank) + " out of range", EBADMSG);
  if (!TagEquals(h.tag, MakeTag(secret, 'C', ch.nonce, h.rank)))
    return PermissionDenied("handshake: peer claiming rank " + std::to_string(h.rank) +
                                " failed authentication (wrong job secret)",
                            EACCES);
  return static_cast<int>(h.rank);
}

Welcome MakeWelcome(const JobSecret& secret, const Hello& h, int32_t my_rank) {
  return Welcome{my_rank, MakeTag(secret, 'A', h.nonce, my_rank)};
}

Status VerifyWelcome(const JobSecret& secret, const Hello& sent, const Welcome& w, int expected_rank) {
  if (w.rank != expected_rank)
    return InvalidArgument("handshake: expected rank " + std::to_string(expected_rank) + ", peer says " +
                               std::to_string(w.rank),
                           EBADMSG);
  if (!TagEquals(w.tag, MakeTag(secret, 'A', sent.nonce, w.rank)))
    return PermissionDenied("handshake: rank " + std::to_string(w.rank) + " failed authentication (wrong job secret)",
                            EACCES);
  return Status::Ok();
}

}  // namespace pdm::auth
