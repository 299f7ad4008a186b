#include "common/status.h"

#include <gtest/gtest.h>

#include "common/posix.h"

namespace pdm {
namespace {

TEST(Status, OkIsCheapAndEmpty) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.err(), 0);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(sizeof(Status), sizeof(void*));
}

TEST(Status, CarriesCodeErrnoAndMessage) {
  Status s = NotFound("token 7", ESRCH);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.err(), ESRCH);
  EXPECT_NE(s.ToString().find("token 7"), std::string::npos);
  Status copy = s;
  EXPECT_EQ(copy.err(), ESRCH);
}

TEST(Status, FromErrnoPicksRetryableCodes) {
  EXPECT_EQ(FromErrno(ECONNRESET, "x").code(), Code::kUnavailable);
  EXPECT_EQ(FromErrno(EBUSY, "x").code(), Code::kFailedPrecondition);
  EXPECT_EQ(FromErrno(EPERM, "x").code(), Code::kPermissionDenied);
  EXPECT_TRUE(FromErrno(0, "x").ok());
}

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}
Result<int> Quarter(int x) {
  PDM_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(Result, PropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().err(), EINVAL);
}

TEST(Posix, PosixErrorNamesCallAndObject) {
  Status s = PosixError("open", "/nope", ENOENT);
  EXPECT_EQ(s.err(), ENOENT);
  EXPECT_NE(s.message().find("open(/nope)"), std::string::npos);
}

}  // namespace
}  // namespace pdm
