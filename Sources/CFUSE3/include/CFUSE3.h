int h2fuse_placeholder(void);
