// libdmapi: handles, DM attributes, file attributes and scans, managed
// regions, holes, invisible I/O, configuration — the calls that work on the
// file system directly, from any node, with a session id from the session
// node (and a token outstanding there, or DM_NO_TOKEN). Objects are opened by
// handle through this node's view (open_by_handle_at), so a handle made on
// one node works on every other.
#include <dmapi.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "dm/attrs.h"
#include "dm/file_io.h"
#include "dmapi/context.h"

using namespace pdm;
using namespace pdm::dmapi;

namespace {

// Per-file-system limits of the xattr-backed state. ext4 (without ea_inode)
// keeps all of an inode's xattrs in the inode's spare space plus one block,
// so what fits depends on the block size: a 256 MB ext4 has 1 KiB blocks,
// where the 4 KiB-block limits (2048-byte attributes, 64 regions) fail with
// ENOSPC. The advertised limits (dm_get_config) are what the setters enforce
// (E2BIG), and leave half a block for the other pdm and security xattrs.
struct FsLimits {
  size_t max_attr = dm::kMaxAttrSize;       // DM_CONFIG_MAX_ATTRIBUTE_SIZE
  size_t max_regions = dm::kMaxRegions;     // DM_CONFIG_MAX_MANAGED_REGIONS
  size_t total_attr_space = 4096;           // DM_CONFIG_TOTAL_ATTRIBUTE_SPACE
};
constexpr size_t kRegionRecordBytes = 24;  // dm::EncodeRegions: offset, size, flags, reserved
FsLimits LimitsOf(int fd) {
  FsLimits l;
  struct statvfs sv;
  if (::fstatvfs(fd, &sv) != 0 || sv.f_bsize == 0) return l;
  const size_t block = static_cast<size_t>(sv.f_bsize);
  l.max_attr = std::min(dm::kMaxAttrSize, block / 2);
  l.max_regions = std::min(dm::kMaxRegions, (block / 2) / kRegionRecordBytes);
  l.total_attr_space = block;
  return l;
}

// Session/token check, then the object opened by handle.
// Opening a directory for writing (dm_punch_hole, dm_write_invis, a size
// change) is EINVAL, as the calls on a non-regular file are, not EISDIR.
Result<UniqueFd> Object(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, int flags) {
  PDM_RETURN_IF_ERROR(CheckSessionToken(sid, token));
  PDM_ASSIGN_OR_RETURN(dm::Handle h, ParseHandle(hanp, hlen));
  auto fd = OpenHandle(h, flags | O_CLOEXEC);
  if (!fd.ok() && fd.status().err() == EISDIR) return InvalidArgument("not a regular file");
  return fd;
}

Result<dm::AttrName> Name(const dm_attrname_t* n) {
  if (n == nullptr) return InvalidArgument("NULL attribute name", EFAULT);
  return dm::AttrName::FromBytes(std::span<const uint8_t, 8>(reinterpret_cast<const uint8_t*>(n->an_chars), 8));
}

void FillStat(const dm::FileAttr& a, int fd, dm_stat_t* st) {
  std::memset(st, 0, sizeof(*st));
  st->dt_dev = static_cast<dm_dev_t>(a.dev);
  st->dt_ino = a.ino;
  st->dt_mode = a.mode;
  st->dt_nlink = static_cast<dm_nlink_t>(a.nlink);
  st->dt_uid = a.uid;
  st->dt_gid = a.gid;
  st->dt_rdev = static_cast<dm_dev_t>(a.rdev);
  st->dt_size = static_cast<dm_off_t>(a.size);
  st->dt_atime = a.atime.tv_sec;
  st->dt_mtime = a.mtime.tv_sec;
  st->dt_ctime = a.ctime.tv_sec;
  st->dt_dtime = a.ctime.tv_sec;  // DM_CONFIG_DTIME_OVERLOAD: dtime is ctime
  st->dt_blksize = static_cast<uint32_t>(a.blksize);
  st->dt_blocks = a.blocks;
  st->dt_nevents = DM_EVENT_MAX;
  if (fd >= 0) {
    if (auto m = dm::GetEventList(fd); m.ok()) st->dt_emask = *m;
    if (auto r = dm::GetRegions(fd); r.ok()) st->dt_pmanreg = !r->empty();
    if (auto all = dm::GetAllDmAttrs(fd); all.ok()) st->dt_pers = !all->empty();
  }
}

// One dm_stat_t entry with its handle and name appended (dirattrs/bulkattr).
std::vector<uint8_t> StatEntry(const dm::FileAttr& a, int fd, const dm::Handle& h, const std::string& name) {
  dm_stat_t st;
  FillStat(a, fd, &st);
  std::span<const uint8_t> hb = h.bytes();
  const size_t handle_at = sizeof(dm_stat_t);
  const size_t name_at = Align8(handle_at + hb.size());
  std::vector<uint8_t> out(Align8(name_at + name.size() + 1), 0);
  st.dt_handle.vd_offset = static_cast<int>(handle_at);
  st.dt_handle.vd_length = static_cast<unsigned>(hb.size());
  st.dt_compname.vd_offset = static_cast<int>(name_at);
  st.dt_compname.vd_length = static_cast<unsigned>(name.size() + 1);
  std::memcpy(out.data(), &st, sizeof(st));
  if (!hb.empty()) std::memcpy(out.data() + handle_at, hb.data(), hb.size());
  std::memcpy(out.data() + name_at, name.c_str(), name.size() + 1);
  return out;
}

// Packs entries into the caller's buffer: 0 when all fit and the scan is
// done, 1 when more remain (the cursor says where), E2BIG when not even one
// fits (*rlenp = what one needs).
int PackEntries(const std::vector<std::vector<uint8_t>>& entries, size_t& used_entries, size_t buflen, void* bufp,
                size_t* rlenp) {
  auto* out = static_cast<uint8_t*>(bufp);
  size_t off = 0, prev = 0;
  used_entries = 0;
  for (const auto& e : entries) {
    if (off + e.size() > buflen) break;
    std::memcpy(out + off, e.data(), e.size());
    if (used_entries > 0) {
      int32_t link = static_cast<int32_t>(off - prev);
      std::memcpy(out + prev, &link, sizeof(link));
    }
    prev = off;
    off += e.size();
    ++used_entries;
  }
  if (!entries.empty() && used_entries == 0) {
    *rlenp = entries[0].size();
    return Fail(E2BIG);
  }
  *rlenp = off;
  return 0;
}

}  // namespace

extern "C" {

// --- handles ----------------------------------------------------------------

int dm_path_to_handle(const char* path, void** hanpp, size_t* hlenp) {
  if (path == nullptr) return Fail(EFAULT);
  auto h = dm::PathToHandle(path);
  return h.ok() ? ReturnHandle(*h, hanpp, hlenp) : Fail(h.status());
}

int dm_fd_to_handle(int fd, void** hanpp, size_t* hlenp) {
  auto h = dm::FdToHandle(fd);
  return h.ok() ? ReturnHandle(*h, hanpp, hlenp) : Fail(h.status());
}

int dm_path_to_fshandle(const char* path, void** hanpp, size_t* hlenp) {
  if (path == nullptr) return Fail(EFAULT);
  auto h = dm::PathToFsHandle(path);
  return h.ok() ? ReturnHandle(*h, hanpp, hlenp) : Fail(h.status());
}

int dm_handle_to_fshandle(void* hanp, size_t hlen, void** fshanpp, size_t* fshlenp) {
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  return ReturnHandle(dm::HandleToFsHandle(*h), fshanpp, fshlenp);
}

int dm_handle_cmp(void* hanp1, size_t hlen1, void* hanp2, size_t hlen2) {
  auto a = ParseHandle(hanp1, hlen1), b = ParseHandle(hanp2, hlen2);
  if (!a.ok() || !b.ok()) {
    // Malformed handles still get a total order: by bytes.
    const size_t n = std::min(hlen1, hlen2);
    int c = (hanp1 && hanp2) ? std::memcmp(hanp1, hanp2, n) : 0;
    return c != 0 ? c : (hlen1 < hlen2 ? -1 : hlen1 > hlen2 ? 1 : 0);
  }
  return dm::Compare(*a, *b);
}

void dm_handle_free(void* hanp, size_t hlen) {
  (void)hlen;
  if (hanp != DM_GLOBAL_HANP) std::free(hanp);
}

unsigned int dm_handle_hash(void* hanp, size_t hlen) {
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return 0;
  uint64_t x = dm::Hash(*h);
  return static_cast<unsigned>(x ^ (x >> 32));
}

dm_boolean_t dm_handle_is_valid(void* hanp, size_t hlen) {
  return hanp != nullptr && hanp != DM_GLOBAL_HANP &&
                 dm::IsValid({static_cast<const uint8_t*>(hanp), hlen})
             ? DM_TRUE
             : DM_FALSE;
}

int dm_handle_to_fsid(void* hanp, size_t hlen, dm_fsid_t* fsidp) {
  if (fsidp == nullptr) return Fail(EFAULT);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  *fsidp = h->fsid();
  return 0;
}

int dm_handle_to_ino(void* hanp, size_t hlen, dm_ino_t* inop) {
  if (inop == nullptr) return Fail(EFAULT);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  if (h->type() != dm::HandleType::kFile) return Fail(EBADF);
  *inop = h->ino();
  return 0;
}

int dm_handle_to_igen(void* hanp, size_t hlen, dm_igen_t* igenp) {
  if (igenp == nullptr) return Fail(EFAULT);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  if (h->type() != dm::HandleType::kFile) return Fail(EBADF);
  *igenp = h->igen();
  return 0;
}

int dm_make_handle(dm_fsid_t* fsidp, dm_ino_t* inop, dm_igen_t* igenp, void** hanpp, size_t* hlenp) {
  if (fsidp == nullptr || inop == nullptr || igenp == nullptr) return Fail(EFAULT);
  return ReturnHandle(dm::MakeHandle(*fsidp, *inop, *igenp), hanpp, hlenp);
}

int dm_make_fshandle(dm_fsid_t* fsidp, void** hanpp, size_t* hlenp) {
  if (fsidp == nullptr) return Fail(EFAULT);
  return ReturnHandle(dm::MakeFsHandle(*fsidp), hanpp, hlenp);
}

int dm_handle_to_path(void* dirhanp, size_t dirhlen, void* targhanp, size_t targhlen, size_t buflen, char* pathbufp,
                      size_t* rlenp) {
  auto dir = ParseHandle(dirhanp, dirhlen);
  if (!dir.ok()) return Fail(dir.status());
  auto targ = ParseHandle(targhanp, targhlen);
  if (!targ.ok()) return Fail(targ.status());
  if (dir->fsid() != targ->fsid()) return Fail(EINVAL);
  auto view = ViewOf(targ->fsid());
  if (!view.ok()) return Fail(view.status());
  auto path = dm::HandleToPath(*targ, *view);
  if (!path.ok()) return Fail(path.status());
  std::vector<uint8_t> bytes(path->begin(), path->end());
  bytes.push_back(0);
  return CopyOut(bytes, buflen, pathbufp, rlenp);
}

// --- DM attributes --------------------------------------------------------------

int dm_set_dmattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_attrname_t* attrnamep,
                  int setdtime, size_t buflen, void* bufp) {
  (void)setdtime;  // setting an xattr changes ctime, which is dtime here
  auto name = Name(attrnamep);
  if (!name.ok()) return Fail(name.status());
  if (buflen > dm::kMaxAttrSize) return Fail(E2BIG);
  if (buflen > 0 && bufp == nullptr) return Fail(EFAULT);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  if (buflen > LimitsOf(fd->get()).max_attr) return Fail(E2BIG);
  Status st = dm::SetDmAttr(fd->get(), *name, {static_cast<const uint8_t*>(bufp), buflen});
  return st.ok() ? 0 : Fail(st);
}

int dm_get_dmattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_attrname_t* attrnamep,
                  size_t buflen, void* bufp, size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  auto name = Name(attrnamep);
  if (!name.ok()) return Fail(name.status());
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto v = dm::GetDmAttr(fd->get(), *name);
  if (!v.ok()) return Fail(v.status());
  return CopyOut(*v, buflen, bufp, rlenp);
}

int dm_remove_dmattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, int setdtime,
                     dm_attrname_t* attrnamep) {
  (void)setdtime;
  auto name = Name(attrnamep);
  if (!name.ok()) return Fail(name.status());
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  Status st = dm::RemoveDmAttr(fd->get(), *name);
  return st.ok() ? 0 : Fail(st);
}

int dm_getall_dmattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, size_t buflen, void* bufp,
                     size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto all = dm::GetAllDmAttrs(fd->get());
  if (!all.ok()) return Fail(all.status());
  LinkedRecords out;
  for (const auto& a : *all) {
    const size_t at = out.Append(sizeof(dm_attrlist_t) + a.value.size());
    dm_attrlist_t al{};
    std::string_view n = a.name.str();
    std::memcpy(al.al_name.an_chars, n.data(), std::min(n.size(), sizeof(al.al_name.an_chars)));
    al.al_data.vd_offset = static_cast<int>(sizeof(dm_attrlist_t));
    al.al_data.vd_length = static_cast<unsigned>(a.value.size());
    std::memcpy(out.at(at), &al, sizeof(al));
    if (!a.value.empty()) std::memcpy(out.at(at) + sizeof(al), a.value.data(), a.value.size());
  }
  return CopyOut(out.bytes(), buflen, bufp, rlenp);
}

// --- file attributes and scans -------------------------------------------------

int dm_get_fileattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int mask,
                    dm_stat_t* statp) {
  if (statp == nullptr) return Fail(EFAULT);
  if (mask & ~0x3fffu) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto a = dm::GetFileAttr(fd->get());
  if (!a.ok()) return Fail(a.status());
  FillStat(*a, fd->get(), statp);
  return 0;
}

int dm_set_fileattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int mask,
                    dm_fileattr_t* attrp) {
  if (attrp == nullptr) return Fail(EFAULT);
  const unsigned settable = DM_AT_MODE | DM_AT_UID | DM_AT_GID | DM_AT_ATIME | DM_AT_MTIME | DM_AT_SIZE;
  // ctime and dtime cannot be set on Linux: asking for them is EINVAL.
  if (mask & ~settable) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, (mask & DM_AT_SIZE) ? O_WRONLY : O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  dm::FileAttr v;
  v.mode = attrp->fa_mode;
  v.uid = attrp->fa_uid;
  v.gid = attrp->fa_gid;
  v.atime.tv_sec = attrp->fa_atime;
  v.mtime.tv_sec = attrp->fa_mtime;
  v.size = static_cast<uint64_t>(attrp->fa_size);
  uint32_t m = 0;
  if (mask & DM_AT_MODE) m |= dm::kSetMode;
  if (mask & DM_AT_UID) m |= dm::kSetUid;
  if (mask & DM_AT_GID) m |= dm::kSetGid;
  if (mask & DM_AT_ATIME) m |= dm::kSetAtime;
  if (mask & DM_AT_MTIME) m |= dm::kSetMtime;
  if (mask & DM_AT_SIZE) m |= dm::kSetSize;
  Status st = dm::SetFileAttr(fd->get(), m, v);
  return st.ok() ? 0 : Fail(st);
}

int dm_init_attrloc(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_attrloc_t* locp) {
  if (locp == nullptr) return Fail(EFAULT);
  if (Status st = CheckSessionToken(sid, token); !st.ok()) return Fail(st);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  *locp = 0;
  return 0;
}

int dm_get_dirattrs(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int mask,
                    dm_attrloc_t* locp, size_t buflen, void* bufp, size_t* rlenp) {
  (void)mask;
  if (locp == nullptr || rlenp == nullptr || (bufp == nullptr && buflen > 0)) return Fail(EFAULT);
  auto dir = Object(sid, hanp, hlen, token, O_RDONLY | O_DIRECTORY);
  if (!dir.ok()) return Fail(dir.status());
  const size_t max = std::max<size_t>(1, buflen / sizeof(dm_stat_t));
  auto batch = dm::ReadDir(dir->get(), static_cast<uint64_t>(*locp), max);
  if (!batch.ok()) return Fail(batch.status());
  std::vector<std::vector<uint8_t>> entries;
  std::vector<uint64_t> after;  // cursor after each entry
  for (const auto& e : batch->entries) {
    UniqueFd fd(::openat(dir->get(), e.name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    entries.push_back(StatEntry(e.attr, fd.get(), e.handle, e.name));
  }
  size_t used = 0;
  if (int rc = PackEntries(entries, used, buflen, bufp, rlenp); rc != 0) return rc;
  if (used < entries.size()) {
    // Not all fit: restart after the last one that did.
    auto again = dm::ReadDir(dir->get(), static_cast<uint64_t>(*locp), used);
    if (!again.ok()) return Fail(again.status());
    *locp = static_cast<dm_attrloc_t>(again->next_cookie);
    return 1;
  }
  *locp = static_cast<dm_attrloc_t>(batch->next_cookie);
  return batch->done ? 0 : 1;
}

int dm_get_bulkattr(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int mask,
                    dm_attrloc_t* locp, size_t buflen, void* bufp, size_t* rlenp) {
  (void)mask;
  if (locp == nullptr || rlenp == nullptr || (bufp == nullptr && buflen > 0)) return Fail(EFAULT);
  auto fs = FsHandleArg(sid, hanp, hlen, token);
  if (!fs.ok()) return Fail(fs.status());
  UniqueFd mount(::open(fs->view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mount.valid()) return Fail(errno);
  const size_t max = std::max<size_t>(1, buflen / sizeof(dm_stat_t));
  auto batch = dm::BulkScan(mount.get(), static_cast<uint64_t>(*locp), max);
  if (!batch.ok()) return Fail(batch.status());
  std::vector<std::vector<uint8_t>> entries;
  for (const auto& e : batch->entries) {
    UniqueFd fd(::openat(mount.get(), e.path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    std::string base = e.path.substr(e.path.rfind('/') == std::string::npos ? 0 : e.path.rfind('/') + 1);
    entries.push_back(StatEntry(e.attr, fd.get(), e.handle, base));
  }
  size_t used = 0;
  if (int rc = PackEntries(entries, used, buflen, bufp, rlenp); rc != 0) return rc;
  // The cursor is the last inode returned (BulkScan resumes after it).
  if (used > 0) *locp = static_cast<dm_attrloc_t>(batch->entries[used - 1].attr.ino);
  return (used < entries.size() || !batch->done) ? 1 : 0;
}

// dm_get_bulkall (DM_CONFIG_BULKALL = 0): not supported, as the spec allows.
int dm_get_bulkall(dm_sessid_t, void*, size_t, dm_token_t, unsigned int, dm_attrname_t*, dm_attrloc_t*, size_t,
                   void*, size_t*) {
  return Fail(ENOSYS);
}

// --- managed regions --------------------------------------------------------------

int dm_set_region(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int nelem,
                  dm_region_t* regbufp, dm_boolean_t* exactflagp) {
  if (exactflagp == nullptr || (nelem > 0 && regbufp == nullptr)) return Fail(EFAULT);
  if (nelem > dm::kMaxRegions) return Fail(E2BIG);
  std::vector<dm::Region> rs;
  for (unsigned i = 0; i < nelem; ++i) {
    if (regbufp[i].rg_flags & ~unsigned(DM_REGION_READ | DM_REGION_WRITE | DM_REGION_TRUNCATE)) return Fail(EINVAL);
    if (regbufp[i].rg_offset < 0) return Fail(EINVAL);
    rs.push_back(dm::Region{static_cast<uint64_t>(regbufp[i].rg_offset), regbufp[i].rg_size, regbufp[i].rg_flags});
  }
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  if (nelem > LimitsOf(fd->get()).max_regions) return Fail(E2BIG);
  Status st = dm::SetRegions(fd->get(), rs);
  if (!st.ok()) return Fail(st);
  // Every node's event source may have noted "no regions, no events" for
  // this file; it must watch it again before the caller goes on (and, say,
  // punches the data out), or a read could slip through to a hole.
  if (!rs.empty()) {
    auto c = Client();
    if (!c.ok()) return Fail(c.status());
    auto h = ParseHandle(hanp, hlen);
    if (!h.ok()) return Fail(h.status());
    std::span<const uint8_t> b = h->bytes();
    if (Status rw = (*c)->Rewatch(sid, std::string(b.begin(), b.end())); !rw.ok()) return Fail(rw);
  }
  *exactflagp = DM_TRUE;  // regions are kept byte-exact
  return 0;
}

int dm_get_region(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int nelem,
                  dm_region_t* regbufp, unsigned int* nelemp) {
  if (nelemp == nullptr) return Fail(EFAULT);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto rs = dm::GetRegions(fd->get());
  if (!rs.ok()) return Fail(rs.status());
  *nelemp = static_cast<unsigned>(rs->size());
  if (nelem < rs->size()) return Fail(E2BIG);
  if (!rs->empty() && regbufp == nullptr) return Fail(EFAULT);
  for (size_t i = 0; i < rs->size(); ++i) {
    regbufp[i] = dm_region_t{};
    regbufp[i].rg_offset = static_cast<dm_off_t>((*rs)[i].offset);
    regbufp[i].rg_size = (*rs)[i].size;
    regbufp[i].rg_flags = (*rs)[i].flags;
  }
  return 0;
}

// --- holes and invisible I/O --------------------------------------------------------

int dm_get_allocinfo(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_off_t* offp, unsigned int nelem,
                     dm_extent_t* extentp, unsigned int* nelemp) {
  if (offp == nullptr || nelemp == nullptr || (nelem > 0 && extentp == nullptr)) return Fail(EFAULT);
  if (nelem == 0 || *offp < 0) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto b = dm::AllocInfo(fd->get(), static_cast<uint64_t>(*offp), nelem);
  if (!b.ok()) return Fail(b.status());
  *nelemp = static_cast<unsigned>(b->extents.size());
  for (size_t i = 0; i < b->extents.size(); ++i) {
    extentp[i] = dm_extent_t{};
    extentp[i].ex_type = b->extents[i].type == dm::ExtentType::kHole ? DM_EXTENT_HOLE : DM_EXTENT_RES;
    extentp[i].ex_offset = static_cast<dm_off_t>(b->extents[i].offset);
    extentp[i].ex_length = b->extents[i].length;
  }
  *offp = static_cast<dm_off_t>(b->next_offset);
  return b->more ? 1 : 0;
}

int dm_probe_hole(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_off_t off, dm_size_t len,
                  dm_off_t* roffp, dm_size_t* rlenp) {
  if (roffp == nullptr || rlenp == nullptr) return Fail(EFAULT);
  if (off < 0) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto r = dm::ProbeHole(fd->get(), static_cast<uint64_t>(off), len);
  if (!r.ok()) return Fail(r.status());
  *roffp = static_cast<dm_off_t>(r->offset);
  *rlenp = r->length;
  return 0;
}

int dm_punch_hole(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_off_t off, dm_size_t len) {
  if (off < 0) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_WRONLY);
  if (!fd.ok()) return Fail(fd.status());
  Status st = dm::PunchHole(fd->get(), static_cast<uint64_t>(off), len);
  return st.ok() ? 0 : Fail(st);
}

dm_ssize_t dm_read_invis(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_off_t off, dm_size_t len,
                         void* bufp) {
  if (bufp == nullptr && len > 0) return Fail(EFAULT);
  if (off < 0) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY | O_NOATIME);
  if (!fd.ok()) return Fail(fd.status());
  auto n = dm::ReadInvisible(fd->get(), static_cast<uint64_t>(off), {static_cast<uint8_t*>(bufp), len});
  return n.ok() ? static_cast<dm_ssize_t>(*n) : Fail(n.status());
}

dm_ssize_t dm_write_invis(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, int flags, dm_off_t off,
                          dm_size_t len, void* bufp) {
  if (bufp == nullptr && len > 0) return Fail(EFAULT);
  if (off < 0 || (flags & ~DM_WRITE_SYNC)) return Fail(EINVAL);
  auto fd = Object(sid, hanp, hlen, token, O_WRONLY);
  if (!fd.ok()) return Fail(fd.status());
  auto n = dm::WriteInvisible(fd->get(), static_cast<uint64_t>(off), {static_cast<const uint8_t*>(bufp), len},
                              (flags & DM_WRITE_SYNC) != 0);
  return n.ok() ? static_cast<dm_ssize_t>(*n) : Fail(n.status());
}

int dm_sync_by_handle(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token) {
  auto fd = Object(sid, hanp, hlen, token, O_RDONLY);
  if (!fd.ok()) return Fail(fd.status());
  Status st = dm::SyncFile(fd->get());
  return st.ok() ? 0 : Fail(st);
}

// --- configuration ------------------------------------------------------------------

int dm_get_config(void* hanp, size_t hlen, dm_config_t flagname, dm_size_t* retvalp) {
  if (retvalp == nullptr) return Fail(EFAULT);
  if (IsGlobal(hanp, hlen)) return Fail(EBADF);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  // The limits depend on the file system: read them through this node's view.
  auto view = ViewOf(h->fsid());
  if (!view.ok()) return Fail(view.status());
  UniqueFd vfd(::open(view->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!vfd.valid()) return Fail(errno);
  const FsLimits lim = LimitsOf(vfd.get());
  switch (flagname) {
    case DM_CONFIG_BULKALL: *retvalp = 0; break;
    case DM_CONFIG_CREATE_BY_HANDLE: *retvalp = 0; break;
    case DM_CONFIG_DTIME_OVERLOAD: *retvalp = 1; break;  // dtime is ctime
    case DM_CONFIG_LEGACY: *retvalp = 1; break;
    case DM_CONFIG_LOCK_UPGRADE: *retvalp = 1; break;
    case DM_CONFIG_MAX_ATTR_ON_DESTROY: *retvalp = lim.max_attr; break;
    case DM_CONFIG_MAX_ATTRIBUTE_SIZE: *retvalp = lim.max_attr; break;
    case DM_CONFIG_MAX_HANDLE_SIZE: *retvalp = DM_MAX_HANDLE_SIZE; break;
    case DM_CONFIG_MAX_MANAGED_REGIONS: *retvalp = lim.max_regions; break;
    case DM_CONFIG_MAX_MESSAGE_DATA: *retvalp = 65536; break;
    case DM_CONFIG_OBJ_REF: *retvalp = 0; break;
    case DM_CONFIG_PENDING: *retvalp = 1; break;
    case DM_CONFIG_PERS_ATTRIBUTES: *retvalp = 1; break;
    case DM_CONFIG_PERS_EVENTS: *retvalp = 1; break;
    case DM_CONFIG_PERS_INHERIT_ATTRIBS: *retvalp = 0; break;
    case DM_CONFIG_PERS_MANAGED_REGIONS: *retvalp = 1; break;
    case DM_CONFIG_PUNCH_HOLE: *retvalp = 1; break;
    case DM_CONFIG_TOTAL_ATTRIBUTE_SPACE: *retvalp = lim.total_attr_space; break;  // ext4: one xattr block
    case DM_CONFIG_WILL_RETRY: *retvalp = 0; break;
    default: return Fail(EINVAL);
  }
  return 0;
}

// --- optional parts not supported (DM_CONFIG_OBJ_REF, CREATE_BY_HANDLE and
// PERS_INHERIT_ATTRIBS are 0): ENOSYS, as the spec prescribes. -------------

int dm_obj_ref_hold(dm_sessid_t, dm_token_t, void*, size_t) { return Fail(ENOSYS); }
int dm_obj_ref_rele(dm_sessid_t, dm_token_t, void*, size_t) { return Fail(ENOSYS); }
int dm_obj_ref_query(dm_sessid_t, dm_token_t, void*, size_t) { return Fail(ENOSYS); }
int dm_create_by_handle(dm_sessid_t, void*, size_t, dm_token_t, void*, size_t, const char*) { return Fail(ENOSYS); }
int dm_mkdir_by_handle(dm_sessid_t, void*, size_t, dm_token_t, void*, size_t, const char*) { return Fail(ENOSYS); }
int dm_symlink_by_handle(dm_sessid_t, void*, size_t, dm_token_t, void*, size_t, const char*, const char*) {
  return Fail(ENOSYS);
}
int dm_set_inherit(dm_sessid_t, void*, size_t, dm_token_t, dm_attrname_t*, mode_t) { return Fail(ENOSYS); }
int dm_clear_inherit(dm_sessid_t, void*, size_t, dm_token_t, dm_attrname_t*) { return Fail(ENOSYS); }
int dm_getall_inherit(dm_sessid_t, void*, size_t, dm_token_t, unsigned int, dm_inherit_t*, unsigned int*) {
  return Fail(ENOSYS);
}

}  // extern "C"
