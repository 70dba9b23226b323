public enum FUSEPlaceholder {}
