// Policy TOML parsing, the watermark trigger and the limit logic
// (src/tools/policy.h). PrefixSelect itself is collective and is exercised
// by tests/mpi/tools_purge_test.cc; its per-key step, TakeWithin, is here.
#include <gtest/gtest.h>

#include "tools/policy.h"

namespace pdm::tools {
namespace {

constexpr const char kPolicy[] = R"(
[trigger]
path = "/scratch"
high = "90%"
low = "80%"

[[class]]
name = "old_tmp"
path = ["*.tmp", "/scratch/**/core"]
exclude = "*.keep"
larger_than = "1M"
older_than = "30d"
by = "mtime"
user = ["0"]
type = "f"

[[class]]
name = "archived_big"
hsm_state = ["archived"]
larger_than = 1048576

[[rule]]
name = "purge_tmp"
action = "purge"
class = ["old_tmp"]
order = "atime"
max_count = 100
max_volume = "10G"

[[rule]]
name = "release_big"
action = "release"
class = "archived_big"
order = "size"
)";

TEST(ToolsPolicy, ParsesClassesRulesAndTrigger) {
  auto p = Policy::Parse(kPolicy, "test.toml");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->classes.size(), 2u);
  const Criteria& c = p->classes[0].criteria;
  EXPECT_EQ(c.include.size(), 2u);
  EXPECT_EQ(c.exclude.size(), 1u);
  EXPECT_EQ(*c.larger_than, 1u << 20);
  EXPECT_EQ(*c.older_than_s, 30 * 86400);
  EXPECT_EQ(c.by, TimeField::kMtime);
  EXPECT_EQ(c.uids, std::vector<uint32_t>{0});
  EXPECT_EQ(c.types, "f");
  EXPECT_EQ(p->classes[1].criteria.hsm, std::vector<HsmClass>{HsmClass::kArchived});
  ASSERT_EQ(p->rules.size(), 2u);
  EXPECT_EQ(p->rules[0].action, Action::kPurge);
  EXPECT_EQ(p->rules[0].order, OrderKey::kAtime);
  EXPECT_EQ(*p->rules[0].max_count, 100u);
  EXPECT_EQ(*p->rules[0].max_volume, 10ull << 30);
  EXPECT_EQ(p->rules[1].action, Action::kRelease);
  EXPECT_EQ(p->rules[1].classes, std::vector<size_t>{1});
  ASSERT_TRUE(p->trigger);
  EXPECT_EQ(p->trigger->path, "/scratch");
  EXPECT_DOUBLE_EQ(p->trigger->high, 0.9);
  EXPECT_DOUBLE_EQ(p->trigger->low, 0.8);
}

TEST(ToolsPolicy, FirstMatchingRuleTakesTheFile) {
  auto p = Policy::Parse(kPolicy);
  ASSERT_TRUE(p.ok());
  Entry e;
  e.path = "/scratch/u/x.tmp";
  e.type = 'f';
  e.size = 2 << 20;
  e.uid = 0;
  e.mtime_ns = 0;
  e.hsm_flags = kHsmExists | kHsmArchived;
  const int64_t now = 100LL * 86400 * 1000000000;
  EXPECT_EQ(p->RuleFor(e, now), 0);  // both match; purge_tmp is first
  e.path = "/scratch/u/x.dat";
  EXPECT_EQ(p->RuleFor(e, now), 1);
  e.hsm_flags = 0;
  EXPECT_EQ(p->RuleFor(e, now), -1);
}

// Each action takes only the files it has work to do on, in the dry run and
// the real run alike, so a rule's max_count is never spent on files done.
TEST(ToolsPolicy, ActionsApplyOnlyWhereThereIsWork) {
  Entry e;
  e.type = 'f';
  const uint32_t none = 0, archived = kHsmExists | kHsmArchived, released = archived | kHsmReleased,
                 dirty = archived | kHsmDirty, lost = kHsmExists | kHsmLost;
  struct Case {
    uint32_t flags;
    bool release, migrate, archive, recall;
  } cases[] = {
      {none, false, true, true, false},
      {archived, true, true, false, false},  // migrate of a clean copy: only the release is left
      {released, false, false, false, true},
      {dirty, false, true, true, false},
      {lost, false, true, true, false},
      {archived | kHsmNoRelease, false, false, false, false},
      {none | kHsmNoArchive, false, false, false, false},
  };
  for (const Case& c : cases) {
    e.hsm_flags = c.flags;
    SCOPED_TRACE(c.flags);
    EXPECT_TRUE(ActionApplies(Action::kPurge, e));
    EXPECT_EQ(ActionApplies(Action::kRelease, e), c.release);
    EXPECT_EQ(ActionApplies(Action::kMigrate, e), c.migrate);
    EXPECT_EQ(ActionApplies(Action::kArchive, e), c.archive);
    EXPECT_EQ(ActionApplies(Action::kRecall, e), c.recall);
  }
  // The HSM manages regular files: a symlink is only ever purged.
  e.type = 'l';
  e.hsm_flags = 0;
  EXPECT_TRUE(ActionApplies(Action::kPurge, e));
  EXPECT_FALSE(ActionApplies(Action::kMigrate, e));
  EXPECT_FALSE(ActionApplies(Action::kArchive, e));
}

TEST(ToolsPolicy, RuleTakingLeavesOtherToolsFilesAlone) {
  auto p = Policy::Parse(R"(
[[class]]
name = "big"
larger_than = "1M"
[[class]]
name = "all"
[[rule]]
name = "mig"
action = "migrate"
class = "big"
[[rule]]
name = "arch"
action = "archive"
class = "all"
)");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  Entry e;
  e.path = "/d/f";
  e.type = 'f';
  e.size = 2 << 20;
  const uint32_t hsm = ActionBit(Action::kRelease) | ActionBit(Action::kMigrate) | ActionBit(Action::kArchive) |
                       ActionBit(Action::kRecall);
  EXPECT_EQ(p->RuleTaking(e, 0, hsm), 0);
  // pdm-archive does not do "mig": the big file is left alone, not handed
  // to "arch" below it (first match wins whichever tool runs).
  EXPECT_EQ(p->RuleTaking(e, 0, ActionBit(Action::kArchive)), -1);
  e.size = 10;
  EXPECT_EQ(p->RuleTaking(e, 0, ActionBit(Action::kArchive)), 1);
  // Already archived and clean: "arch" has nothing to do.
  e.hsm_flags = kHsmExists | kHsmArchived;
  EXPECT_EQ(p->RuleTaking(e, 0, hsm), -1);
  EXPECT_EQ(p->FirstRuleNotIn(hsm), -1);
  EXPECT_EQ(p->FirstRuleNotIn(ActionBit(Action::kMigrate)), 1);
}

TEST(ToolsPolicy, VolumesCountWhatTheActionFreesOrMoves) {
  Entry e;
  e.type = 'f';
  e.size = 1 << 20;
  e.blocks = 8;  // 4 KiB allocated: sparse, or released
  for (Action a : {Action::kPurge, Action::kRelease, Action::kMigrate}) {
    EXPECT_EQ(VolumeOf(a, e), 4096u) << ActionName(a);
    EXPECT_TRUE(FreesSpace(a));
  }
  for (Action a : {Action::kArchive, Action::kRecall}) {
    EXPECT_EQ(VolumeOf(a, e), 1u << 20) << ActionName(a);
    EXPECT_FALSE(FreesSpace(a));
  }
}

TEST(ToolsPolicy, ErrorsNameThePlace) {
  struct Case {
    const char* text;
    const char* needle;
  } cases[] = {
      {"[[rule]]\nname='r'\naction='purge'\nclass='nope'\n", "no class named 'nope'"},
      {"[[class]]\nname='c'\nolder_than='30q'\n[[rule]]\nname='r'\naction='purge'\nclass='c'\n", "class[0].older_than"},
      {"[[class]]\nname='c'\nsize='1G'\n[[rule]]\nname='r'\naction='purge'\nclass='c'\n", "class[0].size: unknown key"},
      {"[[class]]\nname='c'\n[[rule]]\nname='r'\naction='delete'\nclass='c'\n", "rule[0].action"},
      {"[[class]]\nname='c'\n", "no [[rule]]"},
      {"[trigger]\nhigh='80%'\nlow='90%'\n[[class]]\nname='c'\n[[rule]]\nname='r'\naction='purge'\nclass='c'\n",
       "low is above high"},
      {"[[class]\nname='c'\n", "test.toml:1:"},
  };
  for (const auto& c : cases) {
    auto p = Policy::Parse(c.text, "test.toml");
    ASSERT_FALSE(p.ok()) << c.text;
    EXPECT_EQ(p.status().code(), Code::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.needle), std::string::npos) << p.status().message();
  }
}

TEST(ToolsPolicy, WatermarkStartsAtHighAndAimsAtLow) {
  Trigger t{"/x", 0.9, 0.8};
  FsUsage u;
  u.size = 1000;
  u.used = 850;
  u.avail = 150;  // 85%: below high
  EXPECT_FALSE(Evaluate(t, u).run);
  u.used = 900;
  u.avail = 100;  // exactly 90%: at high runs
  auto d = Evaluate(t, u);
  EXPECT_TRUE(d.run);
  EXPECT_EQ(d.bytes_to_free, 100u);  // down to 800 of 1000
  u.used = 950;
  u.avail = 50;
  EXPECT_EQ(Evaluate(t, u).bytes_to_free, 150u);
  // Reserved blocks: Use% counts used / (used + avail), as df does.
  u.size = 1100;
  u.used = 900;
  u.avail = 100;
  EXPECT_DOUBLE_EQ(u.used_fraction(), 0.9);
  EXPECT_EQ(Evaluate(t, u).bytes_to_free, 100u);
}

TEST(ToolsPolicy, OrderKeys) {
  Entry a, b;
  a.atime_ns = 5;
  b.atime_ns = 7;
  EXPECT_LT(OrderKeyOf(OrderKey::kAtime, a), OrderKeyOf(OrderKey::kAtime, b));  // oldest first
  a.size = 10;
  b.size = 20;
  EXPECT_LT(OrderKeyOf(OrderKey::kSize, b), OrderKeyOf(OrderKey::kSize, a));  // largest first
  a.size = ~uint64_t{0};
  EXPECT_LT(OrderKeyOf(OrderKey::kSize, a), OrderKeyOf(OrderKey::kSize, b));
}

// One parser for a rule's `order` and pdm-purge --order.
TEST(ToolsPolicy, OrderNames) {
  EXPECT_EQ(*ParseOrderKey("none"), OrderKey::kNone);
  EXPECT_EQ(*ParseOrderKey("atime"), OrderKey::kAtime);
  EXPECT_EQ(*ParseOrderKey("mtime"), OrderKey::kMtime);
  EXPECT_EQ(*ParseOrderKey("ctime"), OrderKey::kCtime);
  EXPECT_EQ(*ParseOrderKey("size"), OrderKey::kSize);
  EXPECT_EQ(ParseOrderKey("lru").status().code(), Code::kInvalidArgument);
  auto p = Policy::Parse("[[class]]\nname = \"a\"\n[[rule]]\nname = \"r\"\nclass = [\"a\"]\norder = \"lru\"\n");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("'lru' is not none, atime, mtime, ctime or size"), std::string::npos)
      << p.status().ToString();
}

TEST(ToolsPolicy, TakeWithinStopsAtTheLimitIncludingTheCrossingOne) {
  std::vector<Candidate> v{{1, 10, 0}, {1, 10, 1}, {1, 10, 2}, {1, 10, 3}};
  EXPECT_EQ(TakeWithin(v, 0, 4, 0, 0, UINT64_MAX, 25), 3u);   // 0,10,20 before: < 25
  EXPECT_EQ(TakeWithin(v, 0, 4, 0, 0, 2, UINT64_MAX), 2u);
  EXPECT_EQ(TakeWithin(v, 0, 4, 0, 30, UINT64_MAX, 25), 0u);  // budget spent by others
  EXPECT_EQ(TakeWithin(v, 1, 3, 0, 0, UINT64_MAX, UINT64_MAX), 2u);
  EXPECT_EQ(TakeWithin(v, 0, 4, 0, 0, UINT64_MAX, 0), 0u);
}

}  // namespace
}  // namespace pdm::tools
