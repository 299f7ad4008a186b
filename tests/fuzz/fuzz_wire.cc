// libFuzzer target: every decoder that reads bytes from a socket.
// Built by scripts/test.sh with clang (-DPDM_FUZZ=ON) and run for a bounded
// time; ASan/UBSan turn any out-of-bounds read into a crash. A decoded frame
// is walked completely, so "accepted" also means "every field is readable".
#include <cstddef>
#include <cstdint>

#include "wire/codec.h"

namespace {

volatile uint64_t sink;

template <typename V>
void Touch(const V* v) {
  if (!v) return;
  for (auto x : *v) sink = sink + static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&x) & 1);
}

void WalkTables(const pdm::wire::TablesMsg* t) {
  if (!t) return;
  if (t->sessions())
    for (const auto* s : *t->sessions()) {
      if (s->info()) sink = sink + s->info()->size();
      if (s->group()) sink = sink + s->group()->size();
    }
  if (t->disps())
    for (const auto* d : *t->disps()) sink = sink + d->events();
  if (t->fs_events())
    for (const auto* f : *t->fs_events()) sink = sink + f->events();
  Touch(t->dead());
}

void WalkEnvelope(const pdm::wire::Envelope* e) {
  using pdm::wire::Body;
  switch (e->body_type()) {
    case Body::Update: {
      const auto* u = e->body_as_Update();
      Touch(u->members());
      if (u->changes())
        for (const auto* c : *u->changes())
          if (c->session() && c->session()->info()) sink = sink + c->session()->info()->size();
      WalkTables(u->snapshot());
      break;
    }
    case Body::StateReport:
      WalkTables(e->body_as_StateReport()->tables());
      break;
    case Body::Event:
      Touch(e->body_as_Event()->payload());
      break;
    case Body::SmRequest: {
      const auto* r = e->body_as_SmRequest();
      if (r->info()) sink = sink + r->info()->size();
      if (r->group()) sink = sink + r->group()->size();
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  if (auto e = pdm::wire::DecodeEnvelope(in); e.ok()) WalkEnvelope(*e);
  if (auto r = pdm::wire::DecodeRequest(in); r.ok()) {
    if ((*r)->info()) sink = sink + (*r)->info()->size();
    Touch((*r)->payload());
  }
  if (auto r = pdm::wire::DecodeReply(in); r.ok()) {
    if ((*r)->sessions())
      for (const auto* s : *(*r)->sessions())
        if (s->info()) sink = sink + s->info()->size();
    if ((*r)->events())
      for (const auto* ev : *(*r)->events()) Touch(ev->payload());
    if ((*r)->nodes())
      for (const auto* n : *(*r)->nodes())
        if (n->view()) sink = sink + n->view()->size();
  }
  return 0;
}
