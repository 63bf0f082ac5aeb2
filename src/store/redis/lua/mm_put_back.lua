local back = restore(ARGV[1], ARGV[2], {}, 1, tonumber(ARGV[3]))
return back
