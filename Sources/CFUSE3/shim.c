int h2fuse_placeholder(void){return 0;}
