// Peer authentication for the control plane: a mutual challenge-response
// keyed with the per-job secret (keyed BLAKE2b from libsodium).
//
// Both transports run the same three fixed-size messages right after a
// connection is set up, before any frame is accepted:
//   acceptor  -> connector : Challenge {magic, version, nonce_a}
//   connector -> acceptor  : Hello     {magic, version, rank_c, nonce_c,
//                                       tag_c = MAC(secret, "C", nonce_a, rank_c)}
//   acceptor  -> connector : Welcome   {rank_a, tag_a = MAC(secret, "A", nonce_c, rank_a)}
// A peer that cannot produce the tag does not know the secret: the connection
// is closed and the refusal logged. The secret itself never crosses the wire.
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "common/status.h"
#include "transport/transport.h"

namespace pdm::auth {

constexpr uint32_t kMagic = 0x70646d31;  // "pdm1"
constexpr uint16_t kVersion = 1;
using Nonce = std::array<uint8_t, 16>;
using Tag = std::array<uint8_t, 32>;

#pragma pack(push, 1)
struct Challenge {
  uint32_t magic;
  uint16_t version;
  Nonce nonce;
};
struct Hello {
  uint32_t magic;
  uint16_t version;
  int32_t rank;
  Nonce nonce;
  Tag tag;
};
struct Welcome {
  int32_t rank;
  Tag tag;
};
#pragma pack(pop)

Nonce RandomNonce();
Tag MakeTag(const JobSecret& secret, char role, const Nonce& nonce, int32_t rank);
bool TagEquals(const Tag& a, const Tag& b);  // constant time

Challenge MakeChallenge();
Hello MakeHello(const JobSecret& secret, const Challenge& ch, int32_t my_rank);
// Checks magic/version/rank range and the tag; returns the peer rank.
Result<int> VerifyHello(const JobSecret& secret, const Challenge& ch, const Hello& h, int size);
Welcome MakeWelcome(const JobSecret& secret, const Hello& h, int32_t my_rank);
Status VerifyWelcome(const JobSecret& secret, const Hello& sent, const Welcome& w, int expected_rank);

// Fills a fresh random job secret (getrandom).
JobSecret NewJobSecret();

}  // namespace pdm::auth
