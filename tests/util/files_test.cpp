// files.h: same_path, DirectoryLock and write_file_atomically under failure (issue 15, data safety).
#include "lowrank/util/files.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::TempDir;

TEST(Files, SamePathSeesOneDirectoryUnderEverySpelling) {
  TempDir dir("files");
  make_directories(dir / "ck");
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(::chdir(dir.path().c_str()), 0);
  EXPECT_TRUE(same_path("ck", "ck/"));
  EXPECT_TRUE(same_path("./ck", dir / "ck"));
  EXPECT_TRUE(same_path("ck", dir.path() + "//./ck/"));
  EXPECT_TRUE(same_path("../" + dir.path().substr(dir.path().rfind('/') + 1) + "/ck", "ck"));
  EXPECT_FALSE(same_path("ck", "."));
  // Paths that do not exist yet compare by their normalized absolute spelling.
  EXPECT_TRUE(same_path("new/a/", "./new//a"));
  EXPECT_FALSE(same_path("new/a", "new/b"));
  EXPECT_FALSE(same_path("ck", "new/a"));  // one exists, the other not
  EXPECT_FALSE(same_path("", ""));
  // A symbolic link is the directory it points at.
  ASSERT_EQ(::symlink((dir / "ck").c_str(), (dir / "link").c_str()), 0);
  EXPECT_TRUE(same_path("link", "ck"));
  ASSERT_EQ(::chdir(cwd), 0);
}

TEST(Files, ASecondLockOnADirectoryIsRefusedNamingTheHolder) {
  TempDir dir("files");
  {
    DirectoryLock first(dir.path(), "output directory (--out)");
    // Another open file description (as another process would have) cannot take it.
    const std::string err = testing::error_of([&] { DirectoryLock second(dir.path(), "output directory (--out)"); });
    EXPECT_NE(err.find("output directory (--out) " + dir.path() + " is in use by another lowrank run"), std::string::npos)
        << err;
    EXPECT_NE(err.find("pid " + std::to_string(::getpid()) + " on "), std::string::npos) << err;
    // A child process is refused too (flock is per open file, inherited locks aside).
    const pid_t child = ::fork();
    if (child == 0) {
      try {
        DirectoryLock other(dir.path(), "x");
        ::_exit(0);
      } catch (...) {
        ::_exit(3);
      }
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << "a second process took the lock";
  }
  // Released with its holder: the next run takes it.
  EXPECT_EQ(testing::error_of([&] { DirectoryLock again(dir.path(), "x"); }), "");
  DirectoryLock moved_from(dir.path(), "x");
  DirectoryLock moved(std::move(moved_from));
  EXPECT_NE(testing::error_of([&] { DirectoryLock third(dir.path(), "x"); }), "");
}

// A full disk (simulated by RLIMIT_FSIZE: writes past the limit fail with EFBIG) leaves the old
// file as it was and no temporary behind.
TEST(Files, AFailedAtomicWriteKeepsTheOldFileAndLeavesNoTemporary) {
  TempDir dir("files");
  const std::string path = dir / "summary.json";
  write_file_atomically(path, "old\n");
  const pid_t child = ::fork();
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1000, 1000};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      write_file_atomically(path, std::string(5000, 'x'));
      ::_exit(0);
    } catch (const std::exception& e) {
      ::_exit(std::string(e.what()).find("writing " + path + " failed") != std::string::npos ? 3 : 4);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << "the write did not fail, or its error does not name the file";
  EXPECT_EQ(testing::read_text(path), "old\n");
  EXPECT_EQ(testing::list_dir(dir.path()), std::vector<std::string>({"summary.json"}));
}

}  // namespace
}  // namespace lowrank
