#include "lowrank/util/choices.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace lowrank {
namespace {

TEST(Choices, AnUnknownNameIsNamedWithTheValidOnes) {
  EXPECT_NO_THROW(check_choice("optimizer", "adam", {"sgd", "adam"}));
  try {
    check_choice("optimizer", "adamm", {"sgd", "adam"});
    ADD_FAILURE() << "no error for an unknown name";
  } catch (const c10::Error& e) {
    EXPECT_EQ(std::string(e.what_without_backtrace()), "unknown optimizer 'adamm'; valid: sgd, adam");
  }
  EXPECT_EQ(join_names({}), "");
  EXPECT_EQ(join_names({"a"}), "a");
  EXPECT_EQ(join_names({"a", "b", "c"}), "a, b, c");
}

}  // namespace
}  // namespace lowrank
