#define _GNU_SOURCE
#include "CLinuxCalls.h"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

const int linux_o_path = O_PATH;
const int linux_seek_data = SEEK_DATA, linux_seek_hole = SEEK_HOLE;
const unsigned int linux_rename_noreplace = RENAME_NOREPLACE, linux_rename_exchange = RENAME_EXCHANGE;
const long linux_utime_now = UTIME_NOW, linux_utime_omit = UTIME_OMIT;

int linux_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

ssize_t linux_copy_file_range(int in, int64_t *in_offset, int out, int64_t *out_offset, size_t length) {
    loff_t a = *in_offset, b = *out_offset;
    ssize_t copied = copy_file_range(in, &a, out, &b, length, 0);
    *in_offset = a;
    *out_offset = b;
    return copied;
}

int linux_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }
