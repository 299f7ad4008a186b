#include "transport/transport.h"

#include <infiniband/verbs.h>

#include "rdma/verbs_transport.h"
#include "transport/tcp_transport.h"

namespace pdm {

Result<TransportKind> ParseTransportKind(std::string_view s) {
  if (s == "auto") return TransportKind::kAuto;
  if (s == "tcp") return TransportKind::kTcp;
  if (s == "verbs") return TransportKind::kVerbs;
  return InvalidArgument("unknown transport '" + std::string(s) + "' (want auto, tcp or verbs)");
}

const char* TransportKindName(TransportKind k) {
  switch (k) {
    case TransportKind::kAuto: return "auto";
    case TransportKind::kTcp: return "tcp";
    case TransportKind::kVerbs: return "verbs";
  }
  return "?";
}

bool VerbsDeviceAvailable() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list) ibv_free_device_list(list);
  return list != nullptr && n > 0;
}

Result<std::unique_ptr<Transport>> MakeTransport(TransportKind kind, const TransportOptions& opts) {
  if (kind == TransportKind::kAuto) kind = VerbsDeviceAvailable() ? TransportKind::kVerbs : TransportKind::kTcp;
  if (kind == TransportKind::kVerbs) {
    if (!VerbsDeviceAvailable())
      return Unavailable("transport verbs requested but ibv_get_device_list lists no RDMA device", ENODEV);
    return std::unique_ptr<Transport>(std::make_unique<VerbsTransport>(opts));
  }
  return std::unique_ptr<Transport>(std::make_unique<TcpTransport>(opts));
}

}  // namespace pdm
