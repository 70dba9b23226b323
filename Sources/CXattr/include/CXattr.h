// Linux's extended attribute calls (sys/xattr.h), which Glibc's Swift module leaves out:
// for tools that copy attributes to and from host files, and for tests.
#ifndef CXATTR_H
#define CXATTR_H

#include <sys/types.h>
#include <sys/xattr.h>

#endif
