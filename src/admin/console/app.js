// Placeholder: the console is written on another branch (src/admin/console/).
