// Decoders for the two wire protocols (cluster.fbs between ranks, local.fbs
// between a DMAPI client and its node agent).
//
// Every byte that arrives from a socket goes through one of these before any
// field is read: the FlatBuffers verifier checks every offset, length and
// nesting depth against the buffer, then the decoder checks what the schema
// cannot say (protocol version, a body present, event types in range, string
// limits). A frame that fails is rejected with InvalidArgument(EBADMSG) or,
// for a version mismatch, EPROTO; the caller logs it and drops the frame.
// The returned pointers point into the caller's buffer.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

#include "common/status.h"
#include "pdm/cluster_generated.h"
#include "pdm/local_generated.h"

namespace pdm::wire {

// 2: Rewatch carries `objects` (an agent of version 1 would drop them).
constexpr uint16_t kClusterVersion = 2;
constexpr uint16_t kLocalVersion = 1;
constexpr unsigned kEventTypeCount = 23;        // DM_EVENT_MAX
constexpr size_t kSessionInfoMax = 256;         // DM_SESSION_INFO_LEN
constexpr size_t kMaxLocalFrame = 16u << 20;    // local API frames

Result<const Envelope*> DecodeEnvelope(std::span<const uint8_t> frame);
Result<const local::Request*> DecodeRequest(std::span<const uint8_t> frame);
Result<const local::Reply*> DecodeReply(std::span<const uint8_t> frame);

}  // namespace pdm::wire
