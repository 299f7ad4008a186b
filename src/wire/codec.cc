#include "wire/codec.h"

#include <string>

namespace pdm::wire {

namespace {

Status Bad(const std::string& what) { return InvalidArgument("malformed frame: " + what, EBADMSG); }

bool SessionOk(const SessionRec* s) {
  return s && (!s->info() || s->info()->size() <= kSessionInfoMax);
}

Status CheckTables(const TablesMsg* t) {
  if (!t) return Bad("missing tables");
  if (t->sessions())
    for (const SessionRec* s : *t->sessions())
      if (!SessionOk(s)) return Bad("session record");
  return Status::Ok();
}

}  // namespace

Result<const Envelope*> DecodeEnvelope(std::span<const uint8_t> frame) {
  flatbuffers::Verifier v(frame.data(), frame.size(), /*max_depth=*/16, /*max_tables=*/1u << 20);
  if (!VerifyEnvelopeBuffer(v)) return Bad("verifier rejected envelope of " + std::to_string(frame.size()) + " bytes");
  const Envelope* env = GetEnvelope(frame.data());
  if (env->version() != kClusterVersion)
    return InvalidArgument("cluster protocol version " + std::to_string(env->version()) + " not supported", EPROTO);
  if (env->body_type() == Body::NONE || env->body() == nullptr) return Bad("no body");
  switch (env->body_type()) {
    case Body::Event: {
      const Event* e = env->body_as_Event();
      if (e->type() >= kEventTypeCount) return Bad("event type " + std::to_string(e->type()));
      if (e->token() == 0) return Bad("event without token");
      break;
    }
    case Body::Update: {
      const Update* u = env->body_as_Update();
      if (!u->members() || u->members()->size() == 0) return Bad("update without members");
      if (u->radix() < 2) return Bad("update radix < 2");
      if (u->changes())
        for (const Change* c : *u->changes()) {
          if (!c) return Bad("null change");
          if (c->kind() == ChangeKind::UpsertSession && !SessionOk(c->session())) return Bad("upsert without session");
        }
      if (u->snapshot()) PDM_RETURN_IF_ERROR(CheckTables(u->snapshot()));
      break;
    }
    case Body::StateReport:
      PDM_RETURN_IF_ERROR(CheckTables(env->body_as_StateReport()->tables()));
      break;
    case Body::SmRequest: {
      const SmRequest* r = env->body_as_SmRequest();
      if (r->info() && r->info()->size() > kSessionInfoMax) return Bad("session info too long");
      if (r->op() > SmOp::MAX) return Bad("unknown SM op");
      break;
    }
    case Body::TokenReply:
      if (env->body_as_TokenReply()->type() >= kEventTypeCount) return Bad("token reply event type");
      break;
    default:
      break;
  }
  return env;
}

Result<const local::Request*> DecodeRequest(std::span<const uint8_t> frame) {
  flatbuffers::Verifier v(frame.data(), frame.size(), 16, 1u << 16);
  if (!local::VerifyRequestBuffer(v)) return Bad("verifier rejected request");
  const local::Request* r = local::GetRequest(frame.data());
  if (r->version() != kLocalVersion)
    return InvalidArgument("local protocol version " + std::to_string(r->version()) + " not supported", EPROTO);
  if (r->op() > local::Op::MAX) return Bad("unknown op");
  if (r->type() >= kEventTypeCount) return Bad("event type out of range");
  return r;
}

Result<const local::Reply*> DecodeReply(std::span<const uint8_t> frame) {
  flatbuffers::Verifier v(frame.data(), frame.size(), 16, 1u << 20);
  if (!v.VerifyBuffer<local::Reply>(nullptr)) return Bad("verifier rejected reply");
  const local::Reply* r = flatbuffers::GetRoot<local::Reply>(frame.data());
  if (r->version() != kLocalVersion)
    return InvalidArgument("local protocol version " + std::to_string(r->version()) + " not supported", EPROTO);
  return r;
}

}  // namespace pdm::wire
