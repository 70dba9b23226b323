// Linux calls and constants that Glibc's Swift module leaves out (they need _GNU_SOURCE):
// for the union's copy-up, whiteouts and renames (Sources/UnionFS).
#ifndef CLINUXCALLS_H
#define CLINUXCALLS_H

#include <stdint.h>
#include <sys/types.h>

extern const int linux_o_path;
extern const int linux_seek_data, linux_seek_hole;
extern const unsigned int linux_rename_noreplace, linux_rename_exchange;
extern const long linux_utime_now, linux_utime_omit;

int linux_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
ssize_t linux_copy_file_range(int in, int64_t *in_offset, int out, int64_t *out_offset, size_t length);
int linux_fallocate(int fd, int mode, int64_t offset, int64_t length);

#endif
