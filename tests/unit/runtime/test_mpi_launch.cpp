// Recognising an mpirun launch from the environment (Open MPI and PMI launchers), before any
// MPI library is loaded.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/error.h"
#include "runtime/mpi_launch.h"

namespace lamina {
namespace {

MpiLaunch detect(const std::map<std::string, std::string>& env) {
  return detect_mpi_launch([&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

TEST(MpiLaunch, NoLauncherMeansOneProcess) {
  const MpiLaunch l = detect({});
  EXPECT_EQ(l.world_size, 1);
  EXPECT_EQ(l.rank, 0);
  EXPECT_FALSE(l.multi_process());
}

TEST(MpiLaunch, OpenMpi) {
  const MpiLaunch l = detect({{"OMPI_COMM_WORLD_SIZE", "4"},
                              {"OMPI_COMM_WORLD_RANK", "3"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_TRUE(l.multi_process());
  EXPECT_TRUE(l.open_mpi);
  EXPECT_EQ(l.world_size, 4);
  EXPECT_EQ(l.rank, 3);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 2);
  EXPECT_EQ(l.source, "OMPI_COMM_WORLD_SIZE=4");
}

TEST(MpiLaunch, PmiLaunchersOfMpichAndIntelMpi) {
  const MpiLaunch l =
      detect({{"PMI_SIZE", "2"}, {"PMI_RANK", "1"}, {"MPI_LOCALRANKID", "1"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_FALSE(l.open_mpi);
  EXPECT_EQ(l.world_size, 2);
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 2);
}

TEST(MpiLaunch, OneProcessJobIsNotMultiProcess) {
  EXPECT_FALSE(detect({{"OMPI_COMM_WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_RANK", "0"}}).multi_process());
}

TEST(MpiLaunch, MissingLocalVariablesMeanOneProcessPerHost) {
  const MpiLaunch l = detect({{"PMI_SIZE", "2"}, {"PMI_RANK", "0"}});
  EXPECT_EQ(l.local_rank, 0);
  EXPECT_EQ(l.local_size, 1);
}

TEST(MpiLaunch, InconsistentEnvironmentsAreErrors) {
  EXPECT_THROW(detect({{"OMPI_COMM_WORLD_SIZE", "2"}}), Error);  // no rank
  EXPECT_THROW(detect({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "2"}}), Error);
  EXPECT_THROW(detect({{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "0"}}), Error);
  EXPECT_THROW(detect({{"PMI_SIZE", "2"}, {"PMI_RANK", "-1"}}), Error);
  EXPECT_THROW(detect({{"PMI_SIZE", "2"}, {"PMI_RANK", "0"}, {"MPI_LOCALRANKID", "2"}, {"MPI_LOCALNRANKS", "2"}}),
               Error);
  try {
    detect({{"OMPI_COMM_WORLD_SIZE", "2x"}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("OMPI_COMM_WORLD_SIZE"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lamina
